//! The TOML config loader: arbitrary bytes (as UTF-8, lossily) through
//! `twnode::config::parse`, which must return an error, never panic. Whatever parses
//! must survive the daemon's own write path: `to_toml()` parses back to an equal config.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let origin = Path::new("fuzz.toml");
    let Ok(config) = twnode::config::parse(&text, origin) else {
        return;
    };
    let written = config.to_toml();
    match twnode::config::parse(&written, origin) {
        Ok(again) => assert_eq!(again, config, "written config:\n{written}"),
        Err(e) => panic!("the written config does not parse back: {e}\n{written}"),
    }
});
