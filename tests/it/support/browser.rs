//! A real headless Chromium driven through chromedriver (Debian's `chromium` and
//! `chromium-driver`) with fantoccini. One chromedriver child per [`Browser`], on a free port,
//! killed on drop; a fresh Chromium profile directory each time.
//!
//! When the binaries are missing the browser tests fail with a clear message — always under
//! `CI=true`, and elsewhere too unless `GATEHOUSE_SKIP_BROWSER_TESTS=1` opts out explicitly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,800",
];

/// How long chromedriver may take to listen.
const DRIVER_START: Duration = Duration::from_secs(20);
/// How long one page may take to show an expected element.
const FIND_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_port: u16,
    session_id: Option<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Also on a failed test: end the WebDriver session (chromedriver then quits Chromium, which
    /// would outlive a killed chromedriver), then stop chromedriver.
    fn drop(&mut self) {
        if let Some(id) = &self.session_id {
            delete_session(self.driver_port, id);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}` with a blocking socket (Drop cannot await); errors are ignored.
fn delete_session(port: u16, id: &str) {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
    }
}

fn on_path(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromium_binary() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| on_path(name))
}

impl Browser {
    /// Start chromedriver and a headless Chromium session. Missing binaries panic with the
    /// reason; `None` only when `GATEHOUSE_SKIP_BROWSER_TESTS=1` is set and `CI` is not `true`.
    pub async fn start() -> Option<Self> {
        let (Some(driver_bin), Some(chromium)) = (on_path("chromedriver"), chromium_binary())
        else {
            let why = "chromium and chromedriver are required for the browser tests \
                       (apt-get install -y chromium chromium-driver; .ci/setup installs them)";
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            let opted_out = std::env::var("GATEHOUSE_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1");
            if in_ci || !opted_out {
                panic!("{why}; set GATEHOUSE_SKIP_BROWSER_TESTS=1 to skip them outside CI");
            }
            eprintln!("SKIPPING browser test (GATEHOUSE_SKIP_BROWSER_TESTS=1): {why}");
            return None;
        };
        // fantoccini's rustls connector needs the process-wide crypto provider; the same one
        // Gatehouse (pingora) installs when it starts. Idempotent.
        pingora::tls::install_default_crypto_provider();
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let mut driver = DriverGuard(Some(driver), None);
        let deadline = Instant::now() + DRIVER_START;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {DRIVER_START:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "args": args, "binary": chromium.display().to_string() }),
        );
        let client = ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("chromium did not start through chromedriver: {e}"));
        let session_id = client.session_id().await.ok().flatten();
        if let Some(id) = &session_id {
            driver.1 = Some((port, id.clone()));
        }
        client.set_window_size(1280, 800).await.unwrap();
        let driver_child = driver.0.take().unwrap();
        driver.1 = None;
        Some(Self {
            client,
            driver: driver_child,
            driver_port: port,
            session_id,
            _profile: profile,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Wait (bounded) for an element matching the CSS selector.
    pub async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(FIND_TIMEOUT)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no element {selector:?} on the page: {e}"))
    }

    /// Every element matching the CSS selector right now.
    pub async fn all(&self, selector: &str) -> Vec<fantoccini::elements::Element> {
        self.client.find_all(Locator::Css(selector)).await.unwrap()
    }

    pub async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.unwrap();
    }

    /// Click something that loads a new page (a submit button, a link) and wait, bounded, until
    /// the new document has replaced the current one and finished loading.
    pub async fn click_and_wait(&self, selector: &str) {
        let element = self.css(selector).await;
        self.client
            .execute("window.__gatehouse_old_page = true;", Vec::new())
            .await
            .unwrap();
        element.click().await.unwrap();
        let deadline = Instant::now() + FIND_TIMEOUT;
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.__gatehouse_old_page === undefined \
                     && document.readyState === 'complete';",
                    Vec::new(),
                )
                .await;
            if matches!(loaded, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {selector:?} did not load a new page within {FIND_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.unwrap()
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.css("body").await.text().await.unwrap()
    }

    /// Save a PNG of the viewport as `target/ui-screenshots/{name}.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(mut self) {
        if self.client.clone().close().await.is_ok() {
            self.session_id = None;
        }
    }
}

/// Ends the session and kills chromedriver if starting fails half-way.
struct DriverGuard(Option<Child>, Option<(u16, String)>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some((port, id)) = &self.1 {
            delete_session(*port, id);
        }
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
