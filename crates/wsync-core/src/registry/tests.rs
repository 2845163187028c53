use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    registry: Registry,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    Fixture {
        _dir: dir,
        root,
        registry: Registry::default(),
    }
}

impl Fixture {
    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    fn add(&mut self, rel: &str, name: Option<&str>) -> Result<usize, AddError> {
        let new = NewWorkspace {
            path: self.root.join(rel),
            name: name.map(str::to_owned),
            excludes: vec![],
        };
        let ws = self.registry.check_new_workspace(&new)?;
        self.registry.workspaces.push(ws);
        Ok(self.registry.workspaces.len() - 1)
    }
    fn attach(&mut self, ws: usize, spec: &str) -> Result<Remote, AttachError> {
        let remote = self.registry.check_new_remote(
            ws,
            &NewRemote {
                spec: spec.to_owned(),
                ..Default::default()
            },
        )?;
        self.registry.workspaces[ws].remotes.push(remote.clone());
        Ok(remote)
    }
}

#[test]
fn add_requires_an_existing_directory() {
    let mut f = fixture();
    assert!(f
        .add("missing", None)
        .unwrap_err()
        .to_string()
        .contains("cannot be used as a workspace"));
    std::fs::write(f.root.join("file"), "x").unwrap();
    assert!(f
        .add("file", None)
        .unwrap_err()
        .to_string()
        .contains("is not a directory"));
}

#[test]
fn add_canonicalizes_and_defaults_the_name() {
    let mut f = fixture();
    f.mkdir("proj");
    std::os::unix::fs::symlink(f.root.join("proj"), f.root.join("link")).unwrap();
    let i = f.add("link", None).unwrap();
    let ws = &f.registry.workspaces[i];
    assert_eq!(ws.path, f.root.join("proj"));
    assert_eq!(
        ws.name, "proj",
        "the name comes from the resolved directory"
    );
}

#[test]
fn names_are_unique() {
    let mut f = fixture();
    f.mkdir("a/proj");
    f.mkdir("b/proj");
    f.add("a/proj", None).unwrap();
    assert!(f
        .add("b/proj", None)
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    f.add("b/proj", Some("proj2")).unwrap();
}

#[test]
fn workspaces_may_not_nest() {
    let mut f = fixture();
    f.mkdir("outer/inner");
    f.add("outer/inner", None).unwrap();
    assert!(f
        .add("outer", None)
        .unwrap_err()
        .to_string()
        .contains("overlaps workspace"));
    let mut g = fixture();
    g.mkdir("outer/inner");
    g.add("outer", None).unwrap();
    assert!(g
        .add("outer/inner", None)
        .unwrap_err()
        .to_string()
        .contains("overlaps workspace"));
}

#[test]
fn hostile_workspace_names_are_rejected() {
    let mut f = fixture();
    f.mkdir("p");
    for bad in ["-x", "a;b", "a\nb", "a`b"] {
        assert!(f.add("p", Some(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn local_remote_may_not_equal_contain_or_sit_inside_a_workspace() {
    let mut f = fixture();
    f.mkdir("ws/sub");
    let ws = f.add("ws", None).unwrap();
    let root = f.root.display().to_string();
    assert!(f
        .attach(ws, &format!("{root}/ws"))
        .unwrap_err()
        .to_string()
        .contains("overlaps workspace"));
    assert!(f
        .attach(ws, &format!("{root}/ws/sub"))
        .unwrap_err()
        .to_string()
        .contains("overlaps workspace"));
    assert!(f
        .attach(ws, &root)
        .unwrap_err()
        .to_string()
        .contains("overlaps workspace"));
    let r = f.attach(ws, &format!("{root}/mirror")).unwrap();
    assert_eq!(r.name, "mirror");
}

#[test]
fn local_remote_may_not_be_root_or_home() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    assert!(f
        .attach(ws, "/")
        .unwrap_err()
        .to_string()
        .contains("cannot be a remote"));
    let home = paths::home_dir().display().to_string();
    assert!(f.attach(ws, &home).is_err());
}

#[test]
fn local_remote_must_be_absolute_and_free_of_dotdot() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    assert!(f
        .attach(ws, "mirror")
        .unwrap_err()
        .to_string()
        .contains("absolute"));
    let spec = format!("{}/x/../mirror", f.root.display());
    assert!(f.attach(ws, &spec).unwrap_err().to_string().contains(".."));
}

#[test]
fn ssh_remote_path_may_not_be_empty_or_root() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    assert!(f.attach(ws, "host:").is_err());
    assert!(f.attach(ws, "host:/").is_err());
    let r = f.attach(ws, "me@host:/srv/m").unwrap();
    assert_eq!(r.name, "host");
}

#[test]
fn remote_specs_and_names_beginning_with_dash_are_rejected() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    assert!(f
        .attach(ws, "-oProxyCommand=x")
        .unwrap_err()
        .to_string()
        .contains("option"));
    let new = NewRemote {
        spec: "host:/srv".into(),
        name: Some("-n".into()),
        ..Default::default()
    };
    assert!(f
        .registry
        .check_new_remote(ws, &new)
        .unwrap_err()
        .to_string()
        .contains("option"));
    let new = NewRemote {
        spec: "host:/srv".into(),
        name: Some("a\u{7}".into()),
        ..Default::default()
    };
    assert!(f.registry.check_new_remote(ws, &new).is_err());
}

#[test]
fn remote_names_are_unique_per_workspace() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    f.attach(ws, "a:/srv/one").unwrap();
    assert!(f
        .attach(ws, "a:/srv/two")
        .unwrap_err()
        .to_string()
        .contains("already has a remote named"));
}

#[test]
fn ssh_only_options_are_refused_for_local_remotes() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    let new = NewRemote {
        spec: format!("{}/m", f.root.display()),
        port: Some(22),
        ..Default::default()
    };
    assert!(f
        .registry
        .check_new_remote(ws, &new)
        .unwrap_err()
        .to_string()
        .contains("only apply to SSH"));
}

#[test]
fn round_trips_and_reads_legacy_arrays() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    f.attach(ws, "ssh://u@h:2222/srv").unwrap();
    let file = f.root.join("reg.json");
    f.registry.save(&file).unwrap();
    assert_eq!(Registry::load(&file).unwrap(), f.registry);
    std::fs::write(&file, "[]").unwrap();
    assert_eq!(Registry::load(&file).unwrap(), Registry::default());
    assert_eq!(
        Registry::load(&f.root.join("absent.json")).unwrap(),
        Registry::default()
    );
}

#[test]
fn corrupt_registry_names_file_and_position() {
    let f = fixture();
    let file = f.root.join("reg.json");
    std::fs::write(&file, "{\"version\":1,\n\"workspaces\": [ {\"name\": 3} ]}").unwrap();
    let err = Registry::load(&file).unwrap_err().to_string();
    assert!(err.contains("reg.json") && err.contains("line 2"), "{err}");
    std::fs::write(&file, "{\"version\":99,\"workspaces\":[]}").unwrap();
    assert!(matches!(
        Registry::load(&file),
        Err(RegistryError::TooNew { .. })
    ));
}

#[test]
fn crash_before_rename_leaves_the_old_registry() {
    let mut f = fixture();
    let file = f.root.join("reg.json");
    f.registry.save(&file).unwrap();
    let before = std::fs::read(&file).unwrap();
    f.mkdir("ws");
    f.add("ws", None).unwrap();
    let crash = f
        .registry
        .save_with(&file, || Err(std::io::Error::other("simulated crash")));
    assert!(crash.is_err());
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp file left behind");
    f.registry.save(&file).unwrap();
    assert_eq!(Registry::load(&file).unwrap(), f.registry);
}

#[test]
fn symlinked_registry_is_refused() {
    let f = fixture();
    let real = f.root.join("real.json");
    std::fs::write(&real, "[]").unwrap();
    let link = f.root.join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(matches!(
        Registry::load(&link),
        Err(RegistryError::Symlink { .. })
    ));
}

#[test]
fn hand_edited_entries_are_revalidated_on_load() {
    let f = fixture();
    let file = f.root.join("reg.json");
    let entry = |remote: &str| {
        format!(
            r#"{{"version":1,"workspaces":[{{"name":"ws","path":"/srv/ws","remotes":[{{"name":"r","target":{remote}}}]}}]}}"#
        )
    };
    let hostile = [
        r#"{"kind":"ssh","host":"localhost","path":"/x","ssh_options":[{"key":"ProxyCommand","value":"touch /tmp/p"}]}"#,
        r#"{"kind":"ssh","host":"-oProxyCommand=touch /tmp/p","path":"/x"}"#,
        r#"{"kind":"ssh","host":"h","path":"$(touch /tmp/p)"}"#,
        r#"{"kind":"ssh","host":"h","port":0,"path":"/x"}"#,
        r#"{"kind":"local","path":"/srv/ws/inside"}"#,
    ];
    for remote in hostile {
        std::fs::write(&file, entry(remote)).unwrap();
        let err = Registry::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("workspace \"ws\", remote \"r\""),
            "{remote}: {err}"
        );
    }
    std::fs::write(&file, entry(r#"{"kind":"ssh","host":"h","path":"/x"}"#)).unwrap();
    Registry::load(&file).unwrap();
    std::fs::write(&file, r#"[{"name":"-x","path":"/a"}]"#).unwrap();
    assert!(Registry::load(&file).is_err());
}

#[test]
fn a_fifo_registry_is_refused_without_blocking() {
    let f = fixture();
    let fifo = f.root.join("reg.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert!(matches!(
        Registry::load(&fifo),
        Err(RegistryError::NotAFile { .. })
    ));
    assert!(matches!(
        Registry::load(&f.root),
        Err(RegistryError::NotAFile { .. })
    ));
}

#[test]
fn port_zero_is_rejected() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    let new = NewRemote {
        spec: "host:/srv".into(),
        port: Some(0),
        ..Default::default()
    };
    assert!(f
        .registry
        .check_new_remote(ws, &new)
        .unwrap_err()
        .to_string()
        .contains("port 0"));
}

#[test]
fn local_remotes_of_different_workspaces_may_not_overlap() {
    let mut f = fixture();
    f.mkdir("a");
    f.mkdir("b");
    let a = f.add("a", None).unwrap();
    let b = f.add("b", None).unwrap();
    let root = f.root.display().to_string();
    f.attach(a, &format!("{root}/mirror")).unwrap();
    for spec in [
        format!("{root}/mirror"),
        format!("{root}/mirror/b"),
        root.clone() + "/mirror/../mirror",
    ] {
        assert!(f.attach(b, &spec).is_err(), "{spec} accepted");
    }
    assert!(f
        .attach(a, &format!("{root}/mirror/inner"))
        .unwrap_err()
        .to_string()
        .contains("overlaps remote"));
    f.attach(b, &format!("{root}/mirror-b")).unwrap();
    // A hand-edited registry with shared mirrors is refused at load.
    let mut reg = f.registry.clone();
    reg.workspaces[b].remotes[0].target = RemoteTarget::Local {
        path: f.root.join("mirror/sub"),
    };
    assert!(reg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("overlaps remote"));
}

#[test]
fn ancestors_of_home_and_non_utf8_paths_are_refused_as_remotes() {
    use std::os::unix::ffi::OsStrExt;
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    if let Some(parent) = paths::home_dir().parent().filter(|p| *p != Path::new("/")) {
        assert!(f
            .attach(ws, &parent.display().to_string())
            .unwrap_err()
            .to_string()
            .contains("cannot be a remote"));
    }
    let target = f.root.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    std::fs::create_dir(&target).unwrap();
    let link = f.root.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = f
        .attach(ws, &link.display().to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid UTF-8"), "{err}");
}

/// A link in a directory anyone may write (as another user's planted one would be) is not
/// followed by attach nor add; the same link in my own directory is.
#[test]
fn paths_redirected_through_a_writable_directory_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    let data = f.mkdir("data");
    let open = f.mkdir("open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&data, open.join("link")).unwrap();
    let err = f
        .attach(ws, &open.join("link").display().to_string())
        .unwrap_err();
    assert!(matches!(err, AttachError::Untrusted(_)), "{err}");
    let err = f.add("open/link", Some("other")).unwrap_err();
    assert!(matches!(err, AddError::Untrusted(_)), "{err}");
    std::os::unix::fs::symlink(&data, f.root.join("mine")).unwrap();
    let remote = f
        .attach(ws, &f.root.join("mine").display().to_string())
        .unwrap();
    assert_eq!(remote.target, RemoteTarget::Local { path: data });
}

#[test]
fn max_delete_beyond_rsyncs_limit_is_refused() {
    let text = |n: u64| {
        format!(r#"{{"version":1,"workspaces":[{{"name":"w","path":"/srv/w","max_delete":{n}}}]}}"#)
    };
    let path = Path::new("/x/reg.json");
    assert!(Registry::parse(path, &text(MAX_DELETE_LIMIT)).is_ok());
    let err = Registry::parse(path, &text(MAX_DELETE_LIMIT + 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_delete must be at most"), "{err}");
}

#[test]
fn add_rules_have_their_variants() {
    let mut f = fixture();
    f.mkdir("a/proj");
    f.mkdir("b/proj");
    f.mkdir("a/proj/inner");
    std::fs::write(f.root.join("file"), "x").unwrap();
    assert!(matches!(
        f.add("missing", None),
        Err(AddError::Unusable { .. })
    ));
    assert!(matches!(
        f.add("file", None),
        Err(AddError::NotADirectory { .. })
    ));
    assert!(matches!(
        f.add("a/proj", Some("-x")),
        Err(AddError::Name(NameError::OptionLike { .. }))
    ));
    f.add("a/proj", None).unwrap();
    let taken = f.add("b/proj", None).unwrap_err();
    assert!(
        matches!(&taken, AddError::NameTaken { name } if name == "proj"),
        "{taken:?}"
    );
    assert_eq!(
        taken.to_string(),
        "a workspace named \"proj\" already exists; pass --name to choose another"
    );
    assert!(matches!(
        f.add("a/proj/inner", None),
        Err(AddError::OverlapsWorkspace { other, .. }) if other == "proj"
    ));
    let new = NewWorkspace {
        path: f.root.join("b/proj"),
        name: Some("p2".into()),
        excludes: vec![" ".into()],
    };
    assert!(matches!(
        f.registry.check_new_workspace(&new),
        Err(AddError::EmptyExclude)
    ));
}

#[test]
fn an_io_cause_is_a_source_not_part_of_the_message() {
    let mut f = fixture();
    let err = f.add("missing", None).unwrap_err();
    let path = f.root.join("missing");
    assert_eq!(
        err.to_string(),
        format!("{} cannot be used as a workspace", path.display())
    );
    let source = std::error::Error::source(&err).expect("the io error is the source");
    assert!(source.to_string().contains("No such file"), "{source}");
}

#[test]
fn attach_rules_have_their_variants() {
    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    let root = f.root.display().to_string();
    assert!(matches!(
        f.attach(ws, &format!("{root}/ws/sub")),
        Err(AttachError::OverlapsWorkspace { workspace, .. }) if workspace == "ws"
    ));
    assert!(matches!(
        f.attach(ws, "/"),
        Err(AttachError::TooBroad { .. })
    ));
    assert!(matches!(
        f.attach(ws, "mirror"),
        Err(AttachError::Spec(SpecError::Unrecognized { .. }))
    ));
    f.attach(ws, "a:/srv/one").unwrap();
    assert!(matches!(
        f.attach(ws, "a:/srv/two"),
        Err(AttachError::NameTaken { name, .. }) if name == "a"
    ));
    let again = NewRemote {
        spec: "a:/srv/one".into(),
        name: Some("other".into()),
        ..Default::default()
    };
    assert!(matches!(
        f.registry.check_new_remote(ws, &again),
        Err(AttachError::AlreadyAttached { .. })
    ));
    let local_with_port = NewRemote {
        spec: format!("{root}/m"),
        port: Some(22),
        ..Default::default()
    };
    assert!(matches!(
        f.registry.check_new_remote(ws, &local_with_port),
        Err(AttachError::SshOnlyOption)
    ));
    let forbidden = NewRemote {
        spec: "b:/srv".into(),
        ssh_options: vec!["ProxyCommand=nc".into()],
        ..Default::default()
    };
    assert!(matches!(
        f.registry.check_new_remote(ws, &forbidden),
        Err(AttachError::SshOption(SshOptionError::Forbidden { .. }))
    ));
    let mismatch = NewRemote {
        spec: "ssh://b:2222/srv".into(),
        port: Some(22),
        ..Default::default()
    };
    assert!(matches!(
        f.registry.check_new_remote(ws, &mismatch),
        Err(AttachError::PortMismatch)
    ));
}

#[test]
fn attach_to_a_missing_workspace_is_an_error_not_a_panic() {
    let f = fixture();
    let new = NewRemote {
        spec: "h:/srv".into(),
        ..Default::default()
    };
    assert!(matches!(
        f.registry.check_new_remote(3, &new),
        Err(AttachError::NoSuchWorkspace { index: 3 })
    ));
}

#[test]
fn invalid_entries_name_workspace_remote_and_problem() {
    let path = Path::new("/x/reg.json");
    let text = r#"{"version":1,"workspaces":[{"name":"ws","path":"/srv/ws","remotes":[{"name":"r","target":{"kind":"ssh","host":"h","port":0,"path":"/x"}}]}]}"#;
    let err = Registry::parse(path, text).unwrap_err();
    let RegistryError::Invalid { entry, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(entry.workspace, "ws");
    assert_eq!(entry.remote.as_deref(), Some("r"));
    assert!(matches!(
        entry.problem,
        EntryProblem::Target(SpecError::PortZero)
    ));
    assert_eq!(
        err.to_string(),
        "registry /x/reg.json: workspace \"ws\", remote \"r\": port 0 is not a valid port; fix the entry by hand (wsync never overwrites the file)"
    );
    let twice = r#"[{"name":"w","path":"/a"},{"name":"w","path":"/b"}]"#;
    let Err(RegistryError::Invalid { entry, .. }) = Registry::parse(path, twice) else {
        panic!("duplicate names accepted");
    };
    assert_eq!(entry.remote, None);
    assert_eq!(entry.problem, EntryProblem::DuplicateName);
    assert_eq!(entry.to_string(), "workspace \"w\": the name appears twice");
}

#[test]
fn add_gives_an_id_and_the_root_identity_and_old_entries_are_backfilled_once() {
    let mut f = fixture();
    let path = f.mkdir("proj");
    let i = f.add("proj", None).unwrap();
    let ws = &f.registry.workspaces[i];
    assert_eq!(ws.id.len(), 32);
    assert!(ws.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(ws.root_id, RootIdentity::of(&path));
    assert!(ws.root_id.is_some());
    let other = f.add_other_id();
    assert_ne!(other, f.registry.workspaces[i].id, "random");
    // An entry from before ids: filled in once, then stable.
    let text = format!(r#"{{"version":1,"workspaces":[{{"name":"old","path":{path:?}}}]}}"#);
    let mut old = Registry::parse(Path::new("r.json"), &text).unwrap();
    assert!(old.workspaces[0].id.is_empty() && old.workspaces[0].root_id.is_none());
    assert!(old.backfill_ids());
    let id = old.workspaces[0].id.clone();
    assert_eq!(old.workspaces[0].root_id, RootIdentity::of(&path));
    assert!(!old.backfill_ids());
    assert_eq!(old.workspaces[0].id, id);
    // A hand-edited id that is not hex is refused.
    let bad = text.replace(r#""name":"old""#, r#""name":"old","id":"a b""#);
    assert!(Registry::parse(Path::new("r.json"), &bad).is_err());
}

impl Fixture {
    fn add_other_id(&mut self) -> String {
        self.mkdir("proj2");
        let i = self.add("proj2", None).unwrap();
        self.registry.workspaces[i].id.clone()
    }
}

/// `keep_deleted_days`: absent in older registries (0), written only when set, bounded, and a
/// local target attached again is the remote itself (so `attach --keep-deleted` can update it),
/// not an overlap with it.
#[test]
fn keep_deleted_days_defaults_to_off_and_is_bounded() {
    let old = r#"{"version":1,"workspaces":[{"name":"w","path":"/src/w","remotes":[{"name":"m","target":{"kind":"local","path":"/srv/m"}}]}]}"#;
    let registry = Registry::parse(Path::new("r.json"), old).unwrap();
    assert_eq!(registry.workspaces[0].remotes[0].keep_deleted_days, 0);
    let json = serde_json::to_string(&registry).unwrap();
    assert!(!json.contains("keep_deleted_days"), "{json}");
    let long = old.replace(
        r#""path":"/srv/m"}}"#,
        r#""path":"/srv/m"},"keep_deleted_days":3651}"#,
    );
    let err = Registry::parse(Path::new("r.json"), &long).unwrap_err();
    assert!(
        err.to_string()
            .contains("keep_deleted_days must be at most 3650"),
        "{err}"
    );

    let mut f = fixture();
    f.mkdir("ws");
    let ws = f.add("ws", None).unwrap();
    let spec = format!("{}/mirror", f.root.display());
    f.attach(ws, &spec).unwrap();
    let again = NewRemote {
        spec: spec.clone(),
        keep_deleted_days: 7,
        transport: Default::default(),
        ..Default::default()
    };
    assert!(matches!(
        f.registry.check_new_remote(ws, &again),
        Err(AttachError::AlreadyAttached { .. })
    ));
    let too_long = NewRemote {
        spec: format!("{}/other", f.root.display()),
        keep_deleted_days: 3651,
        transport: Default::default(),
        ..Default::default()
    };
    assert!(matches!(
        f.registry.check_new_remote(ws, &too_long),
        Err(AttachError::KeepDeletedTooLong)
    ));
}
