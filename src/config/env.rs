//! `${NAME}` in the config file's string values, read from the environment when the file
//! is loaded (secrets stay out of the file). A variable that is not set (or not UTF-8) is
//! an error naming it, never an empty string; `$${` stands for a literal `${`.

use super::file::FileError;

pub(super) fn expand_value(v: &mut toml::Value, at: &str) -> Result<(), FileError> {
    match v {
        toml::Value::String(s) => *s = expand_env(s, at, |n| std::env::var(n))?,
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                expand_value(v, &format!("{at}[{i}]"))?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand_value(v, &format!("{at}.{k}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with `var(NAME)` and `$${` with `${`; `at` names the value in errors.
pub fn expand_env(
    s: &str,
    at: &str,
    var: impl Fn(&str) -> Result<String, std::env::VarError>,
) -> Result<String, FileError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err(FileError::BadReference {
                    at: at.to_string(),
                    message: "unterminated ${ (write $${ for a literal ${)".into(),
                });
            };
            let name = &r[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(FileError::BadReference {
                    at: at.to_string(),
                    message: format!(
                        "bad environment variable name {name:?} in ${{...}} (write $${{ for a literal ${{)"
                    ),
                });
            }
            match var(name) {
                Ok(v) => out.push_str(&v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(FileError::MissingEnv {
                        name: name.to_string(),
                        at: at.to_string(),
                    })
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(FileError::EnvNotUnicode {
                        name: name.to_string(),
                        at: at.to_string(),
                    })
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Result<String, std::env::VarError> {
        match name {
            "A" => Ok("alpha".into()),
            "EMPTY" => Ok(String::new()),
            "_B1" => Ok("q\"uo}te".into()),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    #[test]
    fn expansion_rules() {
        let x = |s: &str| expand_env(s, "k", vars);
        assert_eq!(x("plain").unwrap(), "plain");
        assert_eq!(x("${A}").unwrap(), "alpha");
        assert_eq!(
            x("pre-${A}-${_B1}-post").unwrap(),
            "pre-alpha-q\"uo}te-post"
        );
        assert_eq!(x("${EMPTY}").unwrap(), "");
        assert_eq!(x("$${A}").unwrap(), "${A}");
        assert_eq!(x("$$${A}").unwrap(), "$${A}");
        assert_eq!(x("$A $ $$ {A} $").unwrap(), "$A $ $$ {A} $");
        assert_eq!(x("héllo ${A}é").unwrap(), "héllo alphaé");
        let e = x("a ${NOPE} b").unwrap_err();
        assert!(
            matches!(&e, FileError::MissingEnv { name, .. } if name == "NOPE"),
            "{e}"
        );
        assert!(e.to_string().contains("NOPE"), "{e}");
        assert!(matches!(x("${A"), Err(FileError::BadReference { .. })));
        assert!(matches!(x("${}"), Err(FileError::BadReference { .. })));
        assert!(matches!(x("${1A}"), Err(FileError::BadReference { .. })));
        assert!(matches!(x("${A-B}"), Err(FileError::BadReference { .. })));
    }
}
