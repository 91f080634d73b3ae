//! The request hygiene path check: never a panic, and no accepted path contains an encoded
//! separator, a dot segment, `;`, NUL or an empty interior segment in any encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        portcullis::validate::hygiene::__fuzz_check_path(text);
    }
});
