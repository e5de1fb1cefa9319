//! A Lambda event, as API Gateway or a function URL delivers it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = troupe_lambda::events::kind(&event);
        let _ = troupe_lambda::events::http_request(event);
    }
});
