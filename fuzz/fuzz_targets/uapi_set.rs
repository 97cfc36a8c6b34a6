//! WireGuard's UAPI `set` parser (what `wg set` sends to a line's socket): arbitrary
//! text as the lines of one operation. It may refuse, never panic, and a refusal's
//! message (logged by the daemon) never holds a whole 64-digit key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use twnode::control::uapi::parse_set;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(refusal) = parse_set(text.split('\n')) {
        for word in text.split(|c: char| !c.is_ascii_hexdigit()) {
            if word.len() >= 64 {
                assert!(
                    !refusal.message.contains(word),
                    "a refusal echoes a key: {}",
                    refusal.message
                );
            }
        }
    }
});
