//! Fuzz the config file parser: arbitrary UTF-8 through [`agent::config::Config::from_yaml`]
//! and, when it parses, [`agent::config::Config::validate`]. The config is operator input, not
//! network input, but a malformed file must be an error message, never a panic or a hang.
#![no_main]

use agent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(cfg) = Config::from_yaml(text, "fuzz.yaml") {
        let _ = cfg.validate();
    }
});
