//! Splitting a `command:` or `args:` string into words.
//!
//! Hand-written rather than taken from `shlex` because a manifest wants a
//! precise error ("unterminated double quote") and none of a shell's other
//! features: `#` is an ordinary character here, and there is no expansion.

/// Splits `text` into words the way a POSIX shell would, with only quoting:
/// words are separated by unquoted whitespace; `'...'` keeps everything
/// literally; `"..."` keeps everything except `\"`, `\\`, `\$` and `` \` ``,
/// which lose the backslash; outside quotes a backslash makes the next
/// character literal. `''` and `""` make an empty word.
pub(crate) fn split_words(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Distinguishes "no word yet" from an empty quoted word.
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            // A quoted backslash-newline joins lines, as in sh.
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("a backslash at the end escapes nothing"),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split_words;

    fn split(text: &str) -> Vec<String> {
        split_words(text).unwrap()
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(split("  nginx -g   'daemon off;' "), ["nginx", "-g", "daemon off;"]);
        assert_eq!(split("a\tb\nc"), ["a", "b", "c"]);
        assert!(split("").is_empty());
        assert!(split("   ").is_empty());
    }

    #[test]
    fn double_quotes_keep_spaces_and_unescape() {
        assert_eq!(split(r#"sh -c "echo \"hi\" \$HOME \n""#), ["sh", "-c", r#"echo "hi" $HOME \n"#]);
        assert_eq!(split(r#"a"b c"d"#), ["ab cd"]);
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(split(r#"'a\b "c"'"#), [r#"a\b "c""#]);
    }

    #[test]
    fn backslash_escapes_outside_quotes() {
        assert_eq!(split(r"a\ b c\\d \'"), ["a b", r"c\d", "'"]);
        assert_eq!(split("a\\\nb"), ["ab"]);
    }

    #[test]
    fn empty_quotes_make_empty_words() {
        assert_eq!(split(r#"x '' """#), ["x", "", ""]);
    }

    #[test]
    fn hash_is_not_a_comment() {
        assert_eq!(split("echo #1"), ["echo", "#1"]);
    }

    #[test]
    fn rejects_unterminated_quotes_and_trailing_backslash() {
        assert_eq!(split_words("'abc"), Err("unterminated single quote"));
        assert_eq!(split_words("\"abc"), Err("unterminated double quote"));
        assert_eq!(split_words("\"abc\\"), Err("unterminated double quote"));
        assert!(split_words("abc\\").is_err());
    }
}
