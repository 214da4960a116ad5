//! `openapi.yaml` (the one source of the contract) as JSON, for
//! `GET /openapi.json`: converted here so the function needs no YAML parser.

use std::{env, fs, path::PathBuf};

fn main() {
    let source = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../openapi.yaml");
    println!("cargo:rerun-if-changed={}", source.display());
    let yaml = fs::read_to_string(&source).expect("read openapi.yaml");
    let document: serde_json::Value = serde_yaml::from_str(&yaml).expect("openapi.yaml is YAML");
    let json = serde_json::to_string(&document).unwrap();
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("openapi.json"),
        json,
    )
    .unwrap();
}
