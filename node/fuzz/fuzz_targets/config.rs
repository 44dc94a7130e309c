//! A node's configuration file: arbitrary UTF-8 through the loader's own parse and
//! checks (`Config::from_toml`, which `Config::load` calls with the file's text).
//! Never a panic; the loader agrees with a bare `toml::from_str` on what parses; an
//! accepted configuration, written back as TOML, loads again to the same TOML.

#![no_main]

use std::path::Path;

use adep_node::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = Path::new("/nonexistent/adep-fuzz/node.toml");
    let base = Path::new("/nonexistent/adep-fuzz");
    let parsed = toml::from_str::<Config>(text);
    let loaded = Config::from_toml(text, path, base);
    match (&parsed, &loaded) {
        (Err(_), Err(ConfigError::Parse { .. })) => {}
        (Err(e), _) => panic!("toml refuses what the loader parsed: {e}"),
        (Ok(_), Err(ConfigError::Parse { message, .. })) => {
            panic!("the loader refuses what toml parses: {message}")
        }
        (Ok(_), Err(ConfigError::Invalid { field, .. })) => {
            assert!(!field.is_empty(), "a refusal that names no field");
        }
        (Ok(_), Err(ConfigError::Read { .. })) => panic!("from_toml read a file"),
        (Ok(_), Ok(config)) => {
            let written = toml::to_string(config).expect("an accepted configuration serialises");
            let again = Config::from_toml(&written, path, base).unwrap_or_else(|e| {
                panic!("an accepted configuration, written back, is refused: {e}")
            });
            let rewritten = toml::to_string(&again).expect("serialises");
            assert_eq!(written, rewritten, "configuration round trip");
        }
    }
});
