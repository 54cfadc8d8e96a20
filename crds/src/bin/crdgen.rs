//! Prints the `DiLoCoServer` CustomResourceDefinition as YAML (`crds/dilocoserver.yaml`), or
//! with `api-reference` the Markdown API reference generated from it (`docs/api-reference.md`).

fn main() {
    match std::env::args().nth(1).as_deref() {
        None => print!("{}", diloco_crds::crd_yaml()),
        Some("api-reference") => print!("{}", diloco_crds::api_reference_markdown()),
        Some(other) => {
            eprintln!("usage: crdgen [api-reference] (unknown argument {other:?})");
            std::process::exit(2);
        }
    }
}
