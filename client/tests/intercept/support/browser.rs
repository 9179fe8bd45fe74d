//! A headless Chromium driven over WebDriver (chromedriver), for tests of czctl's web pages:
//! plain HTTP and JSON, one connection per command.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Debian's Chromium and its driver (`apt install chromium chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what a test waits for.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether Chromium and chromedriver are installed; if not, says so (CI installs them and sets
/// `CZ_REQUIRE_BROWSER`, which makes their absence a failure).
pub fn available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var_os("CZ_REQUIRE_BROWSER").is_none(),
            "CZ_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing"
        );
        eprintln!(
            "SKIPPED: the browser test needs {CHROMIUM} and {CHROMEDRIVER} (apt install chromium chromium-driver); .ci/run installs them"
        );
    }
    present
}

/// A browser session; dropping it ends chromedriver (and with it Chromium).
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// Where downloads go.
    pub downloads: PathBuf,
    _profile: super::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, downloads to a
    /// directory of its own, and no network use of its own.
    pub async fn start() -> Self {
        let port = super::free_port().await;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Its own process group, so that Chromium goes with it (see `Drop`).
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = super::TempDir::new("chromium");
        let downloads = profile.0.join("downloads");
        std::fs::create_dir_all(&downloads).expect("the download directory");
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            downloads: downloads.clone(),
            _profile: profile,
        };
        cz_testkit::eventually("chromedriver to answer", PAGE_DEADLINE, || async {
            let status = browser.call(Method::GET, "/status", None).await.ok()?;
            status["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        let user_data = browser._profile.0.join("profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,900",
                    format!("--user-data-dir={}", user_data.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let created = browser
            .call(Method::POST, "/session", Some(capabilities))
            .await
            .expect("a browser session");
        browser.session = created["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        // Headless Chromium saves downloads only when told where.
        browser
            .command(
                "/chromium/send_command",
                json!({"cmd": "Page.setDownloadBehavior", "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}}),
            )
            .await;
        browser
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    /// Text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css).await?;
        let text = self
            .call(
                Method::GET,
                &format!("/session/{}/element/{element}/text", self.session),
                None,
            )
            .await
            .ok()?;
        text["value"].as_str().map(str::to_owned)
    }

    /// Waits until the element matching `css` shows text for which `wanted` holds; returns it.
    pub async fn wait_for_text(
        &self,
        css: &str,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        cz_testkit::eventually(what, PAGE_DEADLINE, || async {
            self.text(css).await.filter(|text| wanted(text))
        })
        .await
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let element = self
            .find(css)
            .await
            .unwrap_or_else(|| panic!("no {css} to click"));
        self.command(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// Replaces the value of the input matching `css` by `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .find(css)
            .await
            .unwrap_or_else(|| panic!("no {css} to type into"));
        self.command(&format!("/element/{element}/clear"), json!({}))
            .await;
        self.command(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call(
                Method::GET,
                &format!("/session/{}/screenshot", self.session),
                None,
            )
            .await
            .expect("a screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(shot["value"].as_str().expect("base64"))
            .expect("a PNG")
    }

    /// Waits for a finished download whose name ends with `suffix`; returns its content.
    pub async fn downloaded(&self, suffix: &str) -> Vec<u8> {
        cz_testkit::eventually("the download to finish", PAGE_DEADLINE, || async {
            let entries = std::fs::read_dir(&self.downloads).ok()?;
            let file = entries
                .flatten()
                .map(|entry| entry.path())
                .find(|path| path.to_string_lossy().ends_with(suffix))?;
            std::fs::read(file).ok()
        })
        .await
    }

    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                Method::POST,
                &format!("/session/{}/element", self.session),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        found["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// A command on this session that must succeed.
    async fn command(&self, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(Method::POST, &path, Some(body))
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path}: {error}"))
    }

    /// One WebDriver call: its JSON answer, or the error it reports.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|error| error.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a WebDriver request");
        let response = tokio::time::timeout(PAGE_DEADLINE, sender.send_request(request))
            .await
            .map_err(|_| format!("no answer to {path}"))?
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|error| error.to_string())?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{status}: {}", value["value"]))
        }
    }
}

impl Browser {
    /// Ends the session (and Chromium with it).
    pub async fn close(self) {
        let path = format!("/session/{}", self.session);
        if let Err(error) = self.call(Method::DELETE, &path, None).await {
            eprintln!("could not end the browser session: {error}");
        }
    }
}

impl Drop for Browser {
    /// Kills chromedriver's process group: chromedriver and the Chromium it started, even when
    /// the test failed before [`Browser::close`].
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}
