//! Finding where a field is set in the TOML text, so that an error names the file's line.

/// The dotted `section.key` set on 1-based `line`, if that line sets one.
pub fn field_at_line(text: &str, line: usize) -> Option<String> {
    let mut section = String::new();
    for (index, current) in text.lines().enumerate() {
        let current = current.trim();
        if let Some(name) = current.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        }
        if index + 1 == line {
            let key = current.split_once('=')?.0.trim();
            return Some(if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    None
}

/// Finds the 1-based line where `section.key` is set in TOML text.
pub fn field_line(text: &str, field: &str) -> Option<usize> {
    let (section, key) = field.split_once('.')?;
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(index + 1);
                }
            }
        }
    }
    None
}
