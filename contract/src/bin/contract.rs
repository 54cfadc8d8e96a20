//! `diloco-contract constants`: prints every name of the contract (paths, headers, credential
//! files, environment variables, body fields) as JSON, for clients in other languages to check
//! themselves against (the Python SDK's tests do).
//!
//! `diloco-contract torch-save-to-safetensors` and `safetensors-to-torch-save` convert stdin to
//! stdout with the contract's own codecs, so tests in other languages can hold our `torch.save`
//! reader and writer against PyTorch itself.

use std::io::{Read, Write};
use std::process::ExitCode;

use diloco_contract::wire::safetensors::pad_header;
use diloco_contract::wire::torch_save::{self, ReadLimits};

fn main() -> ExitCode {
    let result = match std::env::args().nth(1).as_deref() {
        Some("constants") => serde_json::to_string_pretty(&diloco_contract::constants::document())
            .map(|text| println!("{text}"))
            .map_err(|e| e.to_string()),
        Some("torch-save-to-safetensors") => convert(torch_save_to_safetensors),
        Some("safetensors-to-torch-save") => convert(safetensors_to_torch_save),
        _ => {
            eprintln!(
                "usage: diloco-contract constants | torch-save-to-safetensors | \
                 safetensors-to-torch-save  (the conversions read stdin, write stdout)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn convert(f: fn(&[u8]) -> Result<Vec<u8>, String>) -> Result<(), String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| e.to_string())?;
    let output = f(&input)?;
    std::io::stdout()
        .write_all(&output)
        .map_err(|e| e.to_string())
}

/// Reads a `torch.save` archive with the contract's reader and writes its tensors as
/// safetensors (keys in the archive's order in the data section).
fn torch_save_to_safetensors(archive: &[u8]) -> Result<Vec<u8>, String> {
    let tensors = torch_save::read(archive, &ReadLimits::default()).map_err(|e| e.to_string())?;
    let header = torch_save::safetensors_header(&tensors);
    let mut json = serde_json::Map::new();
    for t in &header.tensors {
        json.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape,
                               "data_offsets": [t.data.start, t.data.end]}),
        );
    }
    let mut json = serde_json::Value::Object(json).to_string();
    pad_header(&mut json);
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    for t in &tensors {
        out.extend_from_slice(t.bytes(archive));
    }
    Ok(out)
}

/// Reads safetensors and writes the same tensors with the contract's `torch.save` writer.
fn safetensors_to_torch_save(blob: &[u8]) -> Result<Vec<u8>, String> {
    torch_save::from_safetensors(blob)
}
