//! Checks a hash-chained audit file written by `secure_api` with `PORTCULLIS_AUDIT_FILE`.
//!
//! ```text
//! cargo run --example audit_verify -- FILE [--allow-unsealed]
//! ```
//!
//! Exits 0 and prints the number of verified lines (and the last hash) when the file is
//! intact; exits 1 naming the first altered, removed or reordered line, or the truncated
//! tail, otherwise; exits 2 on a usage error. A keyed log needs its key in
//! `PORTCULLIS_AUDIT_HMAC_KEY_FILE` (and every line must then be keyed). `--allow-unsealed`
//! accepts a file whose writer is still running (no seal at the end yet).

use std::process::ExitCode;

use portcullis::audit::{ChainKey, VerifyOptions, verify_file};

fn main() -> ExitCode {
    let mut file = None;
    let mut options = VerifyOptions::default();
    for arg in std::env::args_os().skip(1) {
        if arg == "--allow-unsealed" {
            options = options.allow_unsealed();
        } else if file.is_none() {
            file = Some(arg);
        } else {
            file = None;
            break;
        }
    }
    let Some(file) = file else {
        eprintln!("usage: audit_verify FILE [--allow-unsealed]");
        return ExitCode::from(2);
    };
    if let Some(key_file) = std::env::var_os("PORTCULLIS_AUDIT_HMAC_KEY_FILE") {
        match ChainKey::from_file(&key_file, None) {
            Ok(key) => options = options.with_key(key),
            Err(e) => {
                eprintln!("audit_verify: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let shown = std::path::Path::new(&file).display().to_string();
    match verify_file(&file, &options) {
        Ok(report) => {
            println!(
                "{shown}: {} lines verified{}, last hash {}",
                report.lines,
                if report.sealed {
                    ", sealed"
                } else {
                    " (not sealed)"
                },
                report.last_hash
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{shown}: NOT INTACT: {e}");
            ExitCode::from(1)
        }
    }
}
