//! A spin.toml, as an operator (or a mistake) writes it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = troupe_host::manifest::App::parse(std::path::Path::new("/nonexistent/spin.toml"), text);
    }
});
