//! The API token file (`api.token_file`): read once at start, refused when it could not
//! protect anything.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("reading the API token from {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing but whitespace in the file: every request would need an empty token.
    #[error(
        "the API token file {file} is empty; write a token into it, e.g. `head -c 32 /dev/urandom | base64 > {file} && chmod 600 {file}`",
        file = path.display()
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read or change the token.
    #[error(
        "the API token file {file} has mode {mode:03o}, which lets group or others read or change it; run `chmod 600 {file}`",
        file = path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The token in `path`, trimmed. Refuses a file that group or others may read or write
/// (mode & 0o077), and one holding only whitespace.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn file(name: &str, text: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fulcrum-token-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        fs::write(&path, text).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn private_file_gives_the_trimmed_token() {
        let path = file("good", "s3cret\n", 0o600);
        assert_eq!(read_token(&path).expect("valid"), "s3cret");
        let path = file("owner-read-only", "s3cret", 0o400);
        assert_eq!(read_token(&path).expect("valid"), "s3cret");
    }

    #[test]
    fn empty_file_is_refused() {
        let path = file("empty", " \n\t\n", 0o600);
        let e = read_token(&path).expect_err("empty").to_string();
        assert!(
            e.starts_with(&format!("the API token file {} is empty", path.display())),
            "{e}"
        );
        assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
    }

    #[test]
    fn readable_by_others_is_refused() {
        for mode in [0o644, 0o640, 0o602, 0o660] {
            let path = file(&format!("mode-{mode:o}"), "s3cret", mode);
            let e = read_token(&path).expect_err("too open").to_string();
            assert_eq!(
                e,
                format!(
                    "the API token file {0} has mode {mode:03o}, which lets group or others read or change it; run `chmod 600 {0}`",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn missing_file_names_it() {
        let path = Path::new("/nonexistent/fulcrum/token");
        let e = read_token(path).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "reading the API token from /nonexistent/fulcrum/token"
        );
    }
}
