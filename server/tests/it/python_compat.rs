//! Goal: byte compatibility with the reference Python libraries, PyPI
//! `tokenlib==2.0.0` and `mohawk==1.1.0`: tokens Sluice issues parse with
//! tokenlib given the node's secret (and derive the same key); tokens
//! tokenlib makes are accepted by Sluice; requests mohawk signs are
//! accepted by the queue API, and tampered ones refused.
//! Method: `scripts/pyenv.sh` makes (once, outside the clone) a venv with
//! the two libraries; a real `sluice serve` with the token service; a
//! Python script run per step.

use std::process::Command;

use serde_json::{Value, json};
use sluice_token::ids;

use crate::tokens::{SECRET, inbox_for, start_verifier, token_get, token_server};

/// The venv's python, made by the project's script.
fn python() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pyenv.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run pyenv.sh");
    assert!(
        out.status.success(),
        "pyenv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Runs `code` with JSON `input` on stdin; returns its JSON output.
fn run(python: &str, code: &str, input: &Value) -> Value {
    use std::io::Write as _;
    let mut child = Command::new(python)
        .arg("-c")
        .arg(code)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

const PARSE: &str = r#"
import json, sys, tokenlib
a = json.load(sys.stdin)
data = tokenlib.parse_token(a["id"], secret=a["secret"])
key = tokenlib.get_derived_secret(a["id"], secret=a["secret"])
try:
    tokenlib.parse_token(a["id"], secret="wrong-secret")
    wrong = "accepted"
except Exception:
    wrong = "refused"
print(json.dumps({"uid": data["uid"], "node": data["node"], "key": key, "wrong": wrong}))
"#;

const MAKE_AND_SIGN: &str = r#"
import json, sys, tokenlib
from mohawk import Sender
a = json.load(sys.stdin)
token = tokenlib.make_token({"uid": a["uid"], "node": a["node"], "fxa_uid": "alice"}, secret=a["secret"])
key = tokenlib.get_derived_secret(token, secret=a["secret"])
def sign(k):
    s = Sender({"id": token, "key": k, "algorithm": "sha256"}, a["url"], "GET", content="", content_type="")
    return s.request_header
print(json.dumps({"good": sign(key), "tampered": sign(key[:-4] + "AAA=")}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenlib_and_mohawk_interoperate_with_sluice() {
    let python = python();
    let verify_url = start_verifier().await;
    let dir = tempfile::tempdir().expect("dir");
    let s = token_server(dir.path(), &verify_url, &["--token-ip-rate", "0"]).await;
    let issued = token_get(&s, "Bearer good-alice-1", &[]).await;
    let issued = issued.expect(200).clone();
    let node = issued["api_endpoint"]
        .as_str()
        .and_then(|e| e.strip_suffix("/v1"))
        .expect("endpoint")
        .to_string();
    let node_secret = ids::node_secret(SECRET, &node).expect("node secret");

    // tokenlib reads Sluice's token, and derives the same key.
    let parsed = run(
        &python,
        PARSE,
        &json!({"id": issued["id"], "secret": node_secret}),
    );
    assert_eq!(parsed["uid"], issued["uid"]);
    assert_eq!(parsed["node"], node.as_str());
    assert_eq!(parsed["key"], issued["key"]);
    assert_eq!(parsed["wrong"], "refused");

    // A queue alice may read; a tokenlib token and mohawk signatures.
    let uid = issued["uid"].as_u64().expect("uid");
    inbox_for(&s, uid).await;
    let url = format!("{node}/v1/default/inbox");
    let signed = run(
        &python,
        MAKE_AND_SIGN,
        &json!({"uid": uid, "node": node, "secret": node_secret, "url": url}),
    );
    let path = url.trim_start_matches(&s.url).to_string();
    let good = signed["good"].as_str().expect("header");
    let read = s.call("GET", &path, Some(good), &[], "").await;
    assert_eq!(read.expect(200)["messages"][0]["body"], "for alice");
    // Replayed, and signed with the wrong key.
    s.call("GET", &path, Some(good), &[], "")
        .await
        .expect_error(401, "InvalidHawk");
    let tampered = signed["tampered"].as_str().expect("header");
    s.call("GET", &path, Some(tampered), &[], "")
        .await
        .expect_error(401, "InvalidHawk");
}
