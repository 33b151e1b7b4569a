//! `cerego serve` as a process, with every line it logs collected: for tests that read the log
//! (secrets never in it, a path it names).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `cerego serve` with every line it writes (stdout and stderr) collected.
pub struct Logged {
    child: Child,
    /// `http://<address>` it listens on.
    pub address: String,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    /// Its working directory.
    pub dir: tempfile::TempDir,
}

impl Logged {
    /// Starts `cerego` in a fresh directory with the clean environment of
    /// `process::command` (PATH, HOST, PORT=0, JSON logs), `BCRYPT_COST=4` and `env`.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command: Command = crate::process::command(&dir);
        command.env("BCRYPT_COST", "4");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cerego");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        let readers = streams
            .into_iter()
            .map(|stream| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        lines.lock().expect("log lines").push(line);
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let address = loop {
            let found = lines
                .lock()
                .expect("log lines")
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|entry| entry["message"] == "listening")
                .and_then(|entry| entry["address"].as_str().map(|a| format!("http://{a}")));
            if let Some(address) = found {
                break address;
            }
            if started.elapsed() > Duration::from_secs(30)
                || child.try_wait().ok().flatten().is_some()
            {
                let _ = child.kill();
                panic!(
                    "cerego did not start: {:?}",
                    lines.lock().expect("log lines")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            address,
            lines,
            readers,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }

    /// Stops the server with SIGTERM and returns everything it logged.
    pub fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        assert!(exit.success(), "clean exit: {exit}");
        for reader in self.readers.drain(..) {
            reader.join().expect("reader");
        }
        std::mem::take(&mut *self.lines.lock().expect("log lines"))
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
