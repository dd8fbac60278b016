//! The Procfile: `name: command` lines naming the app's process types (Heroku's format).
//! `web` is the one given `PORT`, health-checked and routed.

use std::collections::BTreeMap;

/// Process type → shell command. Errors name the line and the reason.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut processes = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |reason: String| format!("Procfile line {}: {reason}", number + 1);
        let (name, command) = line
            .split_once(':')
            .ok_or_else(|| at(format!("{line:?} is not `name: command`")))?;
        let (name, command) = (name.trim(), command.trim());
        let valid = !name.is_empty()
            && name.len() <= 30
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(at(format!(
                "process type {name:?} must be lowercase letters, digits, - or _"
            )));
        }
        if command.is_empty() {
            return Err(at(format!("process type {name:?} has no command")));
        }
        if processes
            .insert(name.to_string(), command.to_string())
            .is_some()
        {
            return Err(at(format!("process type {name:?} is defined twice")));
        }
    }
    Ok(processes)
}

/// The argument vector that runs a Procfile command (a shell line, as Heroku runs it).
pub fn command_vector(command: &str) -> Vec<String> {
    vec!["sh".to_string(), "-c".to_string(), command.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_process_types_and_names_bad_lines() {
        let parsed =
            parse("# comment\nweb: python3 app.py --port $PORT\n\nworker:  sh -c 'sleep 1'\n")
                .unwrap();
        assert_eq!(parsed["web"], "python3 app.py --port $PORT");
        assert_eq!(parsed["worker"], "sh -c 'sleep 1'");
        assert_eq!(
            parse("web: a\nno colon here\n").unwrap_err(),
            "Procfile line 2: \"no colon here\" is not `name: command`"
        );
        assert!(parse("Web: a").unwrap_err().contains("line 1"));
        assert!(parse("web:").unwrap_err().contains("no command"));
        assert!(
            parse("web: a\nweb: b")
                .unwrap_err()
                .contains("defined twice")
        );
    }
}
