//! Receivers of notifications on 127.0.0.1: an HTTP server that records each request (the
//! webhook and Slack), and a real SMTP server (aiosmtpd from `.cache/venv`, installed by
//! `scripts/install-deps.sh`) that records each mail. Both stop when dropped.
//!
//! The HTTP side is a small std::net server: the tests need to record bodies and to misbehave
//! on purpose (answer 500, or accept and never answer), which a real web framework makes
//! harder to arrange than to write.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How the HTTP server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// This status code, with a short body.
    Status(u16),
    /// Accepts, reads nothing, never answers (a hung endpoint).
    Silent,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The body parsed as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on 127.0.0.1 recording every request.
#[derive(Debug)]
pub struct HttpReceiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl HttpReceiver {
    pub fn start(answer: Answer) -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopping) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (recorded, stopping) = (Arc::clone(&recorded), Arc::clone(&stopping));
                std::thread::spawn(move || serve(stream, answer, &recorded, &stopping));
            }
        });
        HttpReceiver {
            addr,
            requests,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until at least `count` requests came in; returns them all.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        while self.requests.lock().unwrap().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.requests()
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, answer: Answer, recorded: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    if answer == Answer::Silent {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(stream);
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    recorded.lock().unwrap().push(Request {
        method,
        path,
        headers,
        body,
    });
    let Answer::Status(code) = answer else {
        return;
    };
    let text = if code < 300 { "ok" } else { "no_service" };
    let response = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = (&stream).write_all(response.as_bytes());
}

/// The aiosmtpd server: records each mail as a JSON file.
const SMTP_SCRIPT: &str = r#"
import json, logging, os, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

# aiosmtpd itself sets the deprecated Session.login_data and warns about it.
logging.getLogger("mail.log").setLevel(logging.ERROR)
out_dir, port = sys.argv[1], int(sys.argv[2])
user, password = os.environ.get("RECEIVER_USER"), os.environ.get("RECEIVER_PASSWORD")

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (auth_data.login.decode() == user and auth_data.password.decode() == password)
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "login": session.auth_data if session.authenticated else None,
        }
        name = os.path.join(out_dir, "%d.json" % time.time_ns())
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(name + ".tmp", name)
        return "250 OK"

kwargs = dict(hostname="127.0.0.1", port=port)
if user:
    kwargs.update(authenticator=authenticator, auth_require_tls=False)
controller = Controller(Handler(), **kwargs)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"#;

/// One mail as received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The whole message: headers and body.
    pub data: String,
    /// The user name it authenticated as, if it did.
    pub login: Option<String>,
}

/// A real SMTP server on 127.0.0.1 (aiosmtpd), without TLS.
#[derive(Debug)]
pub struct SmtpReceiver {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl SmtpReceiver {
    /// A server that accepts mail from anyone, offering no AUTH.
    pub fn start() -> SmtpReceiver {
        SmtpReceiver::spawn(None)
    }

    /// A server that offers AUTH (over plain text) and accepts only `user` / `password`.
    pub fn with_login(user: &str, password: &str) -> SmtpReceiver {
        SmtpReceiver::spawn(Some((user, password)))
    }

    fn spawn(login: Option<(&str, &str)>) -> SmtpReceiver {
        let python = crate::workspace_root().join(".cache/venv/bin/python");
        assert!(
            python.exists(),
            "{} missing: run scripts/install-deps.sh (it installs aiosmtpd)",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("receiver.py");
        std::fs::write(&script, SMTP_SCRIPT).unwrap();
        let mails = dir.path().join("mails");
        std::fs::create_dir(&mails).unwrap();
        let port = crate::free_port();
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(&mails)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((user, password)) = login {
            cmd.env("RECEIVER_USER", user)
                .env("RECEIVER_PASSWORD", password);
        }
        let mut child = cmd.spawn().expect("start aiosmtpd");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "aiosmtpd did not start");
        SmtpReceiver { port, child, dir }
    }

    /// Every mail received so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mails"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
                Mail {
                    from: v["mail_from"].as_str().unwrap_or("").to_string(),
                    to: v["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    data: v["data"].as_str().unwrap_or("").to_string(),
                    login: v["login"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// Waits (up to `timeout`) until at least `count` mails came in; returns them all.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        while self.mails().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.mails()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        // Closing its stdin stops it; kill in case it does not.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
