//! The web console served on `GET /`: one self-contained page (inline CSS and JavaScript, no
//! external resources) that polls `GET /api/v1/services` every second.

/// The console page, byte for byte as the daemon serves it (`text/html; charset=utf-8`).
pub const CONSOLE_HTML: &str = include_str!("console.html");
