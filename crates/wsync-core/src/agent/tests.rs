//! The agent's protocol end to end over in-memory streams against a real target directory:
//! hello, open (marker checked, refusals), pipelined applies with streamed content, the budget
//! carried across a continued batch; the wire format pinned; `cksum` matching the real one.

use std::io::Cursor;

use super::*;
use crate::executor::tests::marked;
use crate::executor::PUT_MAX_DEFAULT;

fn meta() -> Meta {
    Meta {
        mode: 0o600,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mtime_sec: 1_600_000_000,
        mtime_nsec: 0,
    }
}

/// Runs the agent on `requests` (frames and raw bytes), returning its replies after the hello.
fn session(input: Vec<u8>) -> (Hello, Vec<Reply>) {
    let mut output = Vec::new();
    serve(&mut Cursor::new(input), &mut output).unwrap();
    let mut lines = output.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let hello = framing::decode(lines.next().unwrap()).unwrap();
    (hello, lines.map(|l| framing::decode(l).unwrap()).collect())
}

fn open(target: &Path) -> Vec<u8> {
    framing::encode(&Request::Open {
        protocol: PROTOCOL_MAX,
        target: target.to_string_lossy().into_owned(),
        workspace_id: "00ff".into(),
    })
}

fn apply(ops: Vec<Op>, contents: &[&[u8]], continued: bool, max_delete: Option<u64>) -> Vec<u8> {
    let payloads = contents
        .iter()
        .map(|c| Payload::Bytes {
            len: c.len() as u64,
            meta: meta(),
        })
        .collect();
    let mut bytes = framing::encode(&Request::Apply {
        continued,
        stop_unless_done: false,
        ops,
        payloads,
        max_delete,
        put_max: PUT_MAX_DEFAULT,
    });
    for content in contents {
        bytes.extend_from_slice(content);
    }
    bytes
}

#[test]
fn pipelined_applies_put_content_streamed_after_their_frame() {
    let (_tmp, t) = marked();
    let mut input = open(&t);
    input.extend(apply(
        vec![
            Op::Mkdir { path: "d".into() },
            Op::Put { path: "d/a".into() },
            Op::Put { path: "b".into() },
        ],
        &[b"alpha\n", b""],
        false,
        None,
    ));
    input.extend(apply(
        vec![
            Op::Rename {
                from: "b".into(),
                to: "c".into(),
                is_dir: false,
                keep_overwritten: false,
            },
            Op::Remove { path: "d".into() },
        ],
        &[],
        false,
        None,
    ));
    let (hello, replies) = session(input);
    assert!(hello.is_agent());
    assert_eq!(negotiate(&hello), Some(PROTOCOL_MAX));
    assert_eq!(replies[0], Reply::Opened);
    let Reply::Applied {
        results, written, ..
    } = &replies[1]
    else {
        panic!("{:?}", replies[1]);
    };
    assert_eq!(results, &vec![OpResult::Done; 3]);
    assert_eq!(*written, 2);
    let Reply::Applied {
        results, deleted, ..
    } = &replies[2]
    else {
        panic!("{:?}", replies[2]);
    };
    assert_eq!(results, &vec![OpResult::Done; 2]);
    assert_eq!(*deleted, 2, "d and d/a");
    assert!(t.join("c").exists() && !t.join("b").exists() && !t.join("d").exists());
}

#[test]
fn a_target_without_the_workspaces_marker_is_refused_and_no_op_runs() {
    let (_tmp, t) = marked();
    std::fs::write(
        t.join(crate::target::MARKER_FILE),
        r#"{"workspace_id":"11"}"#,
    )
    .unwrap();
    let mut input = open(&t);
    input.extend(apply(
        vec![Op::Put { path: "x".into() }],
        &[b"x"],
        false,
        None,
    ));
    let (_, replies) = session(input);
    assert!(matches!(
        replies[0],
        Reply::Refused {
            refusal: Refusal::NotOurs,
            ..
        }
    ));
    assert!(matches!(replies[1], Reply::Error { .. }), "{replies:?}");
    assert!(!t.join("x").exists());
}

#[test]
fn the_root_is_refused_as_too_broad() {
    let (_, replies) = session(open(Path::new("/")));
    assert!(matches!(
        replies[0],
        Reply::Refused {
            refusal: Refusal::TooBroad,
            ..
        }
    ));
}

#[test]
fn a_continued_batch_keeps_the_budget_left_and_stops_after_it_ran_out() {
    let (_tmp, t) = marked();
    for name in ["a", "b", "c"] {
        std::fs::write(t.join(name), "").unwrap();
    }
    let rm = |p: &str| Op::Remove { path: p.into() };
    let mut input = open(&t);
    input.extend(apply(vec![rm("a")], &[], false, Some(1)));
    input.extend(apply(vec![rm("b")], &[], true, Some(1)));
    input.extend(apply(vec![rm("c")], &[], true, Some(1)));
    let (_, replies) = session(input);
    assert!(matches!(&replies[1], Reply::Applied { deleted: 1, .. }));
    let Reply::Applied { results, .. } = &replies[2] else {
        panic!()
    };
    assert!(matches!(results[0], OpResult::OverMaxDelete { .. }));
    let Reply::Applied { results, .. } = &replies[3] else {
        panic!()
    };
    assert_eq!(results, &vec![OpResult::Skipped]);
    assert!(t.join("b").exists() && t.join("c").exists());
}

#[test]
fn an_unknown_protocol_is_answered_with_an_error() {
    let (_tmp, t) = marked();
    let input = framing::encode(&Request::Open {
        protocol: PROTOCOL_MAX + 1,
        target: t.to_string_lossy().into_owned(),
        workspace_id: "00ff".into(),
    });
    let (_, replies) = session(input);
    assert!(matches!(replies[0], Reply::Error { .. }));
}

#[test]
fn versions_negotiate_down_to_the_highest_both_speak() {
    let hello = |min, max| Hello {
        agent: "wsync-agent".into(),
        version: "9".into(),
        protocol_min: min,
        protocol_max: max,
        pid: 1,
    };
    assert_eq!(negotiate(&hello(1, 99)), Some(PROTOCOL_MAX));
    assert_eq!(negotiate(&hello(PROTOCOL_MAX + 1, 99)), None);
    assert_eq!(negotiate(&hello(0, 0)), None);
}

#[test]
fn wire_format_is_pinned() {
    let open = Request::Open {
        protocol: 1,
        target: "dst".into(),
        workspace_id: "ab".into(),
    };
    let text = r#"{"request":"open","protocol":1,"target":"dst","workspace_id":"ab"}"#;
    assert_eq!(
        String::from_utf8(framing::encode(&open)).unwrap(),
        format!("{text}\n")
    );
    assert_eq!(framing::decode::<Request>(text.as_bytes()).unwrap(), open);
    let reply = Reply::Applied {
        results: vec![OpResult::Done],
        deleted: 0,
        written: 1,
        bytes: 3,
    };
    let text =
        r#"{"reply":"applied","results":[{"result":"done"}],"deleted":0,"written":1,"bytes":3}"#;
    assert_eq!(framing::decode::<Reply>(text.as_bytes()).unwrap(), reply);
    let payload = r#"{"payload":"bytes","len":3,"meta":{"mode":420,"uid":0,"gid":0,"mtime_sec":1,"mtime_nsec":2}}"#;
    assert!(matches!(
        framing::decode::<Payload>(payload.as_bytes()).unwrap(),
        Payload::Bytes { len: 3, .. }
    ));
}

#[test]
fn cksum_matches_the_posix_tool() {
    for content in [&b""[..], b"a", b"hello world\n", &[0xffu8; 70_000][..]] {
        let mut child = std::process::Command::new("cksum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(content).unwrap();
        let out = child.wait_with_output().unwrap();
        let expected = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            posix_cksum(content),
            expected.trim(),
            "{} bytes",
            content.len()
        );
        // Fed in pieces, as the install reads the binary.
        let mut sum = Cksum::default();
        for piece in content.chunks(4097) {
            sum.update(piece);
        }
        assert_eq!(sum.finish(), expected.trim());
    }
}
