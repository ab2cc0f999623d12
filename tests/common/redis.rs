//! Real `redis-server` processes for the Redis engine's tests: each on a free loopback port, in
//! its own directory under target/, without persistence unless asked, killed when dropped.
//! redis-server must be installed (`.ci/run` installs it): a missing one fails the test loudly.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process.
pub(crate) struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

/// A port nobody listens on right now (bind port 0, read it, let it go).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "redis-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the Redis directory");
    dir
}

impl Redis {
    /// Starts redis-server with no persistence and `extra` arguments.
    pub(crate) fn start(extra: &[&str]) -> Redis {
        Redis::start_on(free_port(), extra)
    }

    pub(crate) fn start_on(port: u16, extra: &[&str]) -> Redis {
        let mut redis = Redis {
            child: None,
            port,
            dir: scratch_dir(&port.to_string()),
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let mut args = vec![
            "--port".to_string(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--maxmemory-policy".into(),
            "noeviction".into(),
        ];
        args.extend(self.args.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (install it: apt-get install redis-server; .ci/run does)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = self.command(&["PING"]) {
                if reply.starts_with("+PONG") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} starts",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// One command in RESP, the raw answer back (enough for PING, DBSIZE, CONFIG, FLUSHALL).
    pub(crate) fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    /// SIGSTOP: the server stops answering, connections stay open.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL, and wait for it to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (an AOF there is replayed).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server must be continued to die promptly on SIGKILL? SIGKILL works on
            // stopped processes too; continue anyway so nothing lingers stopped.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A crier node (in-process, two shards) on the Redis engine at `redis`, with
/// `--redis-timeout redis_timeout` and `extra` flags, returned once its engine is connected.
pub(crate) fn start_node(
    redis: &Redis,
    redis_timeout: &str,
    extra: &[&str],
) -> crier::server::ServerHandle {
    let url = redis.url();
    let mut args = vec![
        "--engine",
        "redis",
        "--redis-url",
        &url,
        "--threads",
        "2",
        "--redis-timeout",
        redis_timeout,
    ];
    args.extend_from_slice(extra);
    let server = super::start(&args);
    wait_engine_up(&server);
    server
}

/// Waits (up to 15 s) until `server`'s Redis engine is connected.
pub(crate) fn wait_engine_up(server: &crier::server::ServerHandle) {
    let status = server.engine_status().expect("the Redis engine runs");
    super::eventually(Duration::from_secs(15), "the engine connects", || {
        status.is_up()
    });
}
