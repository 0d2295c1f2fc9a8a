use std::collections::HashMap;

/// Settings read from a configuration file.
#[derive(Debug, Default, Clone)]
pub struct Config {
    /// Key/value pairs, in no order.
    pub values: HashMap<String, String>,
}

impl Config {
    /// Build a configuration from TOML text: one `key = "value"` per line.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let mut values = HashMap::new();
        for line in text.lines() {
            let (key, value) = line.split_once('=').ok_or_else(|| format!("bad line: {line}"))?;
            values.insert(key.trim().to_string(), value.trim().trim_matches('"').to_string());
        }
        Ok(Config { values })
    }

    /// Look up one setting.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|s| s.as_str())
    }
}
