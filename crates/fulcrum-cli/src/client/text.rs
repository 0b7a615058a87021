//! Text made safe and fit for the terminal: one line, cut short, wrapped.

/// `text` with line breaks as `; ` and other control characters escaped, so that a
/// message from the server or a name stays on one line and cannot drive the terminal.
pub(super) fn one_line(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.chars()
                .map(|c| match c.is_control() {
                    true => c.escape_default().to_string(),
                    false => c.to_string(),
                })
                .collect()
        })
        .collect();
    lines.join("; ")
}

/// At most `max` characters of `text`, ending in `…` when cut.
pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` in lines of at most `width` characters, broken at spaces where it can be, at
/// most `max_lines` of them, the last ending in `…` when cut; one empty line for no text.
pub(super) fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(2);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let space = usize::from(used > 0);
            if used + space + word.len() <= width {
                if space == 1 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a whole line: split it.
            let rest = word.split_off(width);
            lines.push(word.into_iter().collect());
            word = rest;
        }
    }
    lines.push(line);
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = &mut lines[max_lines - 1];
        if last.chars().count() >= width {
            *last = last.chars().take(width - 1).collect();
        }
        last.push('…');
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_and_escapes() {
        assert_eq!(
            one_line("a.yaml:1: x\na.yaml:2: y\n"),
            "a.yaml:1: x; a.yaml:2: y"
        );
        assert_eq!(one_line("bad\x1b[31m"), "bad\\u{1b}[31m");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn wraps_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("", 10, 4), [""]);
        assert_eq!(wrap("tcp: timed out", 30, 4), ["tcp: timed out"]);
        assert_eq!(
            wrap("connect: connection refused", 10, 4),
            ["connect:", "connection", "refused"]
        );
        assert_eq!(
            wrap("abcdefghijklmnop q", 6, 4),
            ["abcdef", "ghijkl", "mnop q"]
        );
        assert_eq!(wrap("a b c d e f", 3, 2), ["a b", "c …"]);
        assert_eq!(wrap("aaa bbb ccc", 3, 2), ["aaa", "bb…"]);
    }
}
