//! Prints the `DiLoCoServer` CustomResourceDefinition as YAML (`crds/dilocoserver.yaml`).

fn main() {
    print!("{}", diloco_crds::crd_yaml());
}
