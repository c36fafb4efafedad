//! `import --out-dir`: one file per machine, a kustomization if asked, and a record of what was
//! written, so that a scheduled job rerunning `import` into the same directory drops the file of a
//! machine that is gone from the account, and never a file `import` did not write. (JSON allows
//! no comment, so a header in each file could not mark them; the record marks both formats.)

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;

use super::manifest::{self, Format};
use crate::resource::CompShareInstance;

/// The record of the files the last run wrote, in the directory itself (it is committed with
/// them, so a job running in a fresh checkout finds it).
const RECORD: &str = ".compshare-import";
const KUSTOMIZATION: &str = "kustomization.yaml";
const RECORD_HEADER: &str = "# Files written by `compshare-operator import` into this directory; the next run into it\n\
# removes those it no longer writes (machines gone, or filtered out). Other files are left alone.\n";

/// How to write the directory.
pub(super) struct Output {
    pub format: Format,
    /// Also write a `kustomization.yaml` listing the files.
    pub kustomization: bool,
    /// Remove the files of earlier runs this one does not write. Only when the listing was
    /// complete: a machine an incomplete listing missed may still exist. Files not removed stay
    /// recorded, for a later run to remove.
    pub prune: bool,
}

/// Writes `resources` into `dir` (one `<name>.<format>` each), the kustomization when asked, then
/// removes the files the previous run recorded that this one did not write, then records this
/// run's files. In that order: a run that fails half-way leaves the old record, so the next run
/// still knows what to remove.
pub(super) fn write(
    dir: &Path,
    resources: &[CompShareInstance],
    output: &Output,
) -> anyhow::Result<()> {
    let Output {
        format,
        kustomization,
        prune,
    } = *output;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::with_capacity(resources.len() + 1);
    for resource in resources {
        let file = format!(
            "{}.{}",
            resource.metadata.name.as_deref().unwrap_or_default(),
            format.extension()
        );
        write_file(&dir.join(&file), &manifest::render_one(resource, format))?;
        files.push(file);
    }
    if kustomization {
        write_file(&dir.join(KUSTOMIZATION), &manifest::kustomization(&files))?;
        files.push(KUSTOMIZATION.to_owned());
    }
    let previous = recorded(dir)?;
    let mut record: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let stale: Vec<&str> = previous
        .iter()
        .map(String::as_str)
        .filter(|f| !record.contains(f))
        .collect();
    if !prune {
        record.extend(stale);
        return write_record(dir, &record);
    }
    for stale in stale {
        let path = dir.join(stale);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), "removed: its machine is no longer listed (gone, or filtered out)")
            }
            // Removed by hand since: nothing left to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    write_record(dir, &record)
}

/// The record: a header saying what it is, then one file name a line, sorted (the same files give
/// the same bytes, as everything else `import` writes).
fn write_record(dir: &Path, files: &BTreeSet<&str>) -> anyhow::Result<()> {
    let names: String = files.iter().map(|f| format!("{f}\n")).collect();
    write_file(&dir.join(RECORD), &format!("{RECORD_HEADER}{names}"))
}

/// The files the previous run recorded; none without a record. Only plain names of files in
/// `dir` are taken: an edited record naming `../x` or `sub/x` cannot make `import` remove a file
/// elsewhere.
fn recorded(dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = dir.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with('#')
                && *line != RECORD
                && Path::new(line).file_name() == Some(std::ffi::OsStr::new(line))
        })
        .map(str::to_owned)
        .collect())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::CompShareInstanceSpec;

    fn resource(name: &str) -> CompShareInstance {
        CompShareInstance::new(name, CompShareInstanceSpec::default())
    }

    /// A complete listing's output.
    fn complete(format: Format, kustomization: bool) -> Output {
        Output {
            format,
            kustomization,
            prune: true,
        }
    }

    fn listing(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_rerun_removes_the_files_of_gone_machines_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(dir.join("README.md"), "mine").unwrap();
        std::fs::write(dir.join("hand-written.yaml"), "mine too").unwrap();
        write(
            dir,
            &[resource("a-1"), resource("b-2")],
            &complete(Format::Yaml, true),
        )
        .unwrap();
        assert_eq!(
            listing(dir),
            names(&[
                RECORD,
                "README.md",
                "a-1.yaml",
                "b-2.yaml",
                "hand-written.yaml",
                KUSTOMIZATION
            ])
        );

        // b-2's machine is gone, c-3 is new.
        write(
            dir,
            &[resource("a-1"), resource("c-3")],
            &complete(Format::Yaml, true),
        )
        .unwrap();
        assert_eq!(
            listing(dir),
            names(&[
                RECORD,
                "README.md",
                "a-1.yaml",
                "c-3.yaml",
                "hand-written.yaml",
                KUSTOMIZATION
            ])
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(KUSTOMIZATION)).unwrap(),
            manifest::kustomization(&["a-1.yaml".into(), "c-3.yaml".into()])
        );

        // Another format, no kustomization: the YAML files and the kustomization were import's.
        write(dir, &[resource("a-1")], &complete(Format::Json, false)).unwrap();
        assert_eq!(
            listing(dir),
            names(&[RECORD, "README.md", "a-1.json", "hand-written.yaml"])
        );
        // An empty account leaves only the record (and the person's files).
        write(dir, &[], &complete(Format::Json, false)).unwrap();
        assert_eq!(
            listing(dir),
            names(&[RECORD, "README.md", "hand-written.yaml"])
        );
    }

    #[test]
    fn after_an_incomplete_listing_files_stay_and_stay_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        write(
            dir,
            &[resource("a-1"), resource("b-2")],
            &complete(Format::Yaml, false),
        )
        .unwrap();
        let incomplete = Output {
            prune: false,
            ..complete(Format::Yaml, false)
        };
        write(dir, &[resource("a-1")], &incomplete).unwrap();
        assert_eq!(listing(dir), names(&[RECORD, "a-1.yaml", "b-2.yaml"]));
        // The next complete listing removes it.
        write(dir, &[resource("a-1")], &complete(Format::Yaml, false)).unwrap();
        assert_eq!(listing(dir), names(&[RECORD, "a-1.yaml"]));
    }

    #[test]
    fn the_record_is_deterministic_and_names_only_files_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        write(
            dir,
            &[resource("b-2"), resource("a-1")],
            &complete(Format::Yaml, false),
        )
        .unwrap();
        let record = std::fs::read_to_string(dir.join(RECORD)).unwrap();
        assert_eq!(record, format!("{RECORD_HEADER}a-1.yaml\nb-2.yaml\n"));

        // An edited record cannot reach outside the directory, nor remove the record itself.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep.yaml"), "").unwrap();
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("keep.yaml"), "").unwrap();
        std::fs::write(
            dir.join(RECORD),
            format!(
                "{}\nsub/keep.yaml\n../keep.yaml\n{RECORD}\n",
                outside.path().join("keep.yaml").display()
            ),
        )
        .unwrap();
        assert!(recorded(dir).unwrap().is_empty());
        write(dir, &[], &complete(Format::Yaml, false)).unwrap();
        assert!(outside.path().join("keep.yaml").exists());
        assert!(sub.join("keep.yaml").exists());
    }
}
