//! Tests of the command-line definition: parsing, usage errors, help and completions.

use super::*;
use clap::CommandFactory;
use std::path::Path;

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("wsync").chain(args.iter().copied()))
}

#[test]
fn parses_attach_with_repeated_options() {
    let cli = parse(&[
        "attach",
        "proj",
        "alice@box:src",
        "--port",
        "2222",
        "--ssh-option",
        "A=1",
        "--ssh-option",
        "B=2",
        "--identity-file",
        "/k",
    ])
    .unwrap();
    let Command::Attach(AttachArgs {
        workspace,
        remote,
        port,
        ssh_options,
        identity_file,
        name,
        no_wait,
        overwrite,
        keep_deleted,
        transport,
        rsync_path,
        timeout,
    }) = cli.command
    else {
        panic!("not attach");
    };
    assert_eq!(transport, wsync_core::registry::Transport::Auto);
    assert_eq!(
        (workspace.as_str(), remote.as_str()),
        ("proj", "alice@box:src")
    );
    assert_eq!(port, Some(2222));
    assert_eq!(ssh_options, ["A=1", "B=2"]);
    assert_eq!(identity_file, Some(PathBuf::from("/k")));
    assert_eq!(name, None);
    assert!(!no_wait && !overwrite);
    assert_eq!(keep_deleted, None);
    assert_eq!(rsync_path, None);
    assert_eq!(timeout, 600);
}

#[test]
fn parses_add_status_flush_and_daemon() {
    let cli = parse(&[
        "add",
        ".",
        "--exclude",
        "a",
        "--exclude",
        "b",
        "--name",
        "n",
    ])
    .unwrap();
    assert!(
        matches!(cli.command, Command::Add(AddArgs { ref excludes, .. }) if excludes == &["a", "b"])
    );
    let cli = parse(&["status", "--json", "--watch"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Status(StatusArgs {
            workspace: None,
            json: true,
            watch: true,
            all: false
        })
    ));
    let cli = parse(&["flush", "p"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Flush(FlushArgs { timeout: 60, .. })
    ));
    let cli = parse(&["daemon", "stop", "--timeout", "3"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Daemon(DaemonCommand::Stop(DaemonStopArgs { timeout: 3 }))
    ));
}

#[test]
fn usage_errors_exit_with_the_usage_code() {
    let err = parse(&["attach", "only-one"]).unwrap_err();
    assert_eq!(err.exit_code(), exit_codes::USAGE);
    let err = parse(&["attach", "p", "/r", "--port", "99999"]).unwrap_err();
    assert_eq!(err.exit_code(), exit_codes::USAGE);
    assert!(parse(&[]).is_err());
}

#[test]
fn completions_are_generated_for_every_shell() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "wsync", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("attach") && text.contains("daemon"),
            "{shell}"
        );
    }
}

#[test]
fn help_documents_exit_codes() {
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("wsync daemon start"), "{help}");
}

#[test]
fn every_command_has_examples_in_its_help() {
    fn check(cmd: &clap::Command, path: &str) {
        for sub in cmd.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            if sub.has_subcommands() {
                check(sub, &path);
                continue;
            }
            let after = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                after.contains("Examples:\n  wsync "),
                "`{path} --help` has no examples"
            );
        }
    }
    check(&Cli::command(), "wsync");
}

#[test]
fn help_documents_the_environment() {
    let help = Cli::command().render_long_help().to_string();
    for var in ["WSYNC_CONFIG_PATH", "WSYNC_LOG", "NO_COLOR"] {
        assert!(help.contains(var), "{var} missing from --help");
    }
}

#[test]
fn absurd_timeouts_are_usage_errors_not_panics() {
    for args in [
        &["wsync", "flush", "ws", "--timeout", "18446744073709551615"][..],
        &["wsync", "attach", "ws", "/m", "--timeout", "0"][..],
        &["wsync", "daemon", "start", "--timeout", "99999999999"][..],
    ] {
        assert!(Cli::try_parse_from(args).is_err(), "{args:?} accepted");
    }
    assert!(Cli::try_parse_from(["wsync", "flush", "ws", "--timeout", "604800"]).is_ok());
}

#[test]
fn each_command_parses_into_its_own_args_struct() {
    let cmd = |args: &[&str]| parse(args).unwrap().command;
    for (name, args) in [
        ("remove", &["remove", "ws"][..]),
        ("pause", &["pause", "ws"]),
        ("resume", &["resume", "ws"]),
        ("restart", &["restart", "ws"]),
    ] {
        let workspace = match cmd(args) {
            Command::Remove(a) | Command::Pause(a) | Command::Resume(a) | Command::Restart(a) => {
                a.workspace
            }
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(workspace.as_deref(), Some("ws"), "{name}");
    }
    assert!(matches!(
        cmd(&["attach", "ws", "/m", "--no-wait", "--timeout", "5"]),
        Command::Attach(AttachArgs {
            no_wait: true,
            timeout: 5,
            ..
        })
    ));
    let Command::Detach(DetachArgs { workspace, remote }) = cmd(&["detach", "ws", "mirror"]) else {
        panic!("not detach");
    };
    assert_eq!((workspace.as_str(), remote.as_str()), ("ws", "mirror"));
    assert!(matches!(
        cmd(&["list"]),
        Command::List(ListArgs { json: false })
    ));
    let Command::Logs(LogsArgs {
        workspace,
        follow,
        lines,
    }) = cmd(&["logs", "ws", "-f", "-n", "7"])
    else {
        panic!("not logs");
    };
    assert_eq!((workspace.as_deref(), follow, lines), (Some("ws"), true, 7));
    assert!(matches!(
        cmd(&["logs"]),
        Command::Logs(LogsArgs {
            workspace: None,
            follow: false,
            lines: 50
        })
    ));
    let Command::Verify(VerifyArgs {
        workspace,
        remote,
        json,
        attributes,
        repair: false,
        ..
    }) = cmd(&["verify", "ws", "box", "--json", "--attributes"])
    else {
        panic!("not verify");
    };
    assert_eq!(
        (workspace.as_str(), remote.as_deref(), json, attributes),
        ("ws", Some("box"), true, true)
    );
    let Command::Verify(VerifyArgs {
        repair: true,
        timeout: 30,
        ..
    }) = cmd(&["verify", "ws", "--repair", "--timeout", "30"])
    else {
        panic!("not verify --repair");
    };
    let Command::CheckIgnore(CheckIgnoreArgs { paths, json }) =
        cmd(&["check-ignore", "a", "b/c", "--json"])
    else {
        panic!("not check-ignore");
    };
    assert_eq!(paths, [PathBuf::from("a"), PathBuf::from("b/c")]);
    assert!(json);
    assert!(parse(&["check-ignore"]).is_err(), "PATH is required");
    assert!(matches!(
        cmd(&["completions", "zsh"]),
        Command::Completions(CompletionsArgs {
            shell: clap_complete::Shell::Zsh
        })
    ));
    assert!(matches!(
        cmd(&["generate-docs", "out"]),
        Command::GenerateDocs(GenerateDocsArgs { ref dir }) if dir == &PathBuf::from("out")
    ));
    assert!(matches!(
        cmd(&["daemon", "start"]),
        Command::Daemon(DaemonCommand::Start(DaemonStartArgs { timeout: 10 }))
    ));
    assert!(matches!(
        cmd(&["daemon", "stop"]),
        Command::Daemon(DaemonCommand::Stop(DaemonStopArgs { timeout: 30 }))
    ));
    assert!(matches!(
        cmd(&["daemon", "status"]),
        Command::Daemon(DaemonCommand::Status)
    ));
}

#[test]
fn help_lists_every_exit_code_in_the_table() {
    let help = Cli::command().render_long_help().to_string();
    let problems = wsync_core::exit_code::check_help(exit_codes::TABLE, &help);
    assert!(problems.is_empty(), "{problems:#?}\n{help}");
    let short = Cli::command().render_help().to_string();
    let problems = wsync_core::exit_code::check_help(exit_codes::TABLE, &short);
    assert!(problems.is_empty(), "{problems:#?}\n{short}");
}

#[test]
fn project_file_commands_and_an_omitted_workspace_parse() {
    let cmd = |args: &[&str]| parse(args).unwrap().command;
    assert!(matches!(
        cmd(&["up"]),
        Command::Up(UpArgs {
            dir: None,
            overwrite: false
        })
    ));
    let Command::Up(UpArgs { dir, overwrite }) = cmd(&["up", "proj", "--overwrite"]) else {
        panic!("not up");
    };
    assert_eq!((dir.as_deref(), overwrite), (Some(Path::new("proj")), true));
    assert!(matches!(
        cmd(&["down"]),
        Command::Down(ProjectDirArgs { dir: None })
    ));
    assert!(matches!(
        cmd(&["init", "d"]),
        Command::Init(ProjectDirArgs { dir: Some(_) })
    ));
    // WORKSPACE may be left out where it is the only positional: the current directory's.
    for args in [&["pause"][..], &["resume"], &["restart"], &["remove"]] {
        match cmd(args) {
            Command::Remove(a) | Command::Pause(a) | Command::Resume(a) | Command::Restart(a) => {
                assert_eq!(a.workspace, None, "{args:?}");
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }
    assert!(matches!(
        cmd(&["flush", "--timeout", "5"]),
        Command::Flush(FlushArgs {
            workspace: None,
            timeout: 5
        })
    ));
    assert!(matches!(
        cmd(&["status", "--all"]),
        Command::Status(StatusArgs { all: true, .. })
    ));
    assert!(parse(&["status", "ws", "--all"]).is_err());
    // Where a second positional follows, WORKSPACE stays required (`attach /m` is not guessable).
    assert!(parse(&["attach", "/m"]).is_err());
}
