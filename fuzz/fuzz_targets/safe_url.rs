//! `SafeUrl` parsing under the default and a permissive policy: never a panic, and every
//! accepted URL keeps the invariants checked in `__fuzz_safe_url` (scheme, no user info, public
//! IP literals only, no internal names, stable under re-parsing).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        portcullis::validate::__fuzz_safe_url(text);
    }
});
