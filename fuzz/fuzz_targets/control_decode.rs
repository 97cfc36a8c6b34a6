//! The control-protocol decoder: arbitrary bytes as one message line, decoded as a
//! `Request` (what the daemon reads from a client) and as a `Response` (what a client
//! reads from the daemon). Neither may panic. A request that decodes must survive
//! `encode` then `decode` unchanged (compared as JSON values: `Request` has no `Eq`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use twnode::control::{decode, encode, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<Request>(data) {
        let line = encode(&request);
        assert_eq!(line.last(), Some(&b'\n'), "a message is one line");
        let again = match decode::<Request>(&line[..line.len() - 1]) {
            Ok(again) => again,
            Err(e) => panic!("an encoded request does not decode: {e}\n{request:?}"),
        };
        assert_eq!(
            serde_json::to_value(&again).expect("a decoded request serializes"),
            serde_json::to_value(&request).expect("a decoded request serializes"),
        );
    }
    if let Ok(response) = decode::<Response>(data) {
        let line = encode(&response);
        let again = match decode::<Response>(&line[..line.len() - 1]) {
            Ok(again) => again,
            Err(e) => panic!("an encoded response does not decode: {e}\n{response:?}"),
        };
        assert_eq!(
            serde_json::to_value(&again).expect("a decoded response serializes"),
            serde_json::to_value(&response).expect("a decoded response serializes"),
        );
    }
});
