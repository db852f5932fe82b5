//! Writes imagewarden's CustomResourceDefinitions as YAML: one file per CRD into the
//! directory given as the first argument, or all of them to stdout.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let crds = imagewarden_operator::crd::all();
    match std::env::args_os().nth(1).map(PathBuf::from) {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for crd in crds {
                let name = crd.metadata.name.clone().unwrap_or_default();
                let path = dir.join(format!("{name}.yaml"));
                std::fs::write(&path, imagewarden_operator::crd::to_yaml(&crd)?)?;
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            for crd in crds {
                print!("---\n{}", imagewarden_operator::crd::to_yaml(&crd)?);
            }
        }
    }
    Ok(())
}
