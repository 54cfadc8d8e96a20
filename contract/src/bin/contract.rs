//! `diloco-contract constants`: prints every name of the contract (paths, headers, credential
//! files, environment variables, body fields) as JSON, for clients in other languages to check
//! themselves against (the Python SDK's tests do).

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("constants") => {
            match serde_json::to_string_pretty(&diloco_contract::constants::document()) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: diloco-contract constants");
            ExitCode::from(2)
        }
    }
}
