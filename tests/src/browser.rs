//! A real browser for the web UI tests: headless Chromium from Debian's `chromium` package,
//! driven over WebDriver by Debian's `chromedriver` (package `chromium-driver`), with a small
//! client written here on `reqwest` (the W3C WebDriver protocol is JSON over HTTP).
//!
//! Nothing is downloaded at run time. Without the two programs a test skips with a message,
//! unless `MAESTRO_REQUIRE_BROWSER` or `MAESTRO_REQUIRE_CLIENTS` is set (`scripts/test.sh`),
//! where that fails.
//!
//! Chromium runs as root here, so with `--no-sandbox`, `--headless=new` and a temporary
//! profile. chromedriver runs in its own process group; dropping the [`Browser`] kills that
//! group and any process still naming the profile directory, even when the test failed.
//!
//! Every page gets a script, before its own, that records uncaught errors, unhandled promise
//! rejections and CSP violations; [`Browser::problems`] returns those with the browser log's
//! severe entries, so a test can fail on any JavaScript error or CSP violation.

// A test fixture: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::util::{ChildGuard, temp_dir};

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for the page lasts before the test fails (a failure guard, not a timing
/// assertion).
pub const WAIT: Duration = Duration::from_secs(30);

/// Recorded in every page before its own scripts run.
const PROBE: &str = r#"
window.__problems = [];
window.addEventListener('error', (e) => {
  const where = e.filename ? ` at ${e.filename}:${e.lineno}` : (e.target && e.target.src ? ` loading ${e.target.src}` : '');
  window.__problems.push(`error: ${e.message || 'a resource failed'}${where}`);
}, true);
window.addEventListener('unhandledrejection', (e) => {
  window.__problems.push(`unhandled rejection: ${e.reason && (e.reason.stack || e.reason)}`);
});
document.addEventListener('securitypolicyviolation', (e) => {
  window.__problems.push(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`);
});
"#;

fn find_program(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return Some(path);
            }
        }
    }
    None
}

/// Chromium and chromedriver, or `None` after saying why (a panic under
/// `MAESTRO_REQUIRE_BROWSER` or `MAESTRO_REQUIRE_CLIENTS`).
pub fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program(&["chromium", "chromium-browser"]);
    let driver = find_program(&["chromedriver"]);
    if let (Some(c), Some(d)) = (&chromium, &driver) {
        return Some((c.clone(), d.clone()));
    }
    let why = format!(
        "browser test skipped: chromium ({}) and chromedriver ({}) are needed; install Debian's \
         chromium and chromium-driver (tests/support/install-browser.sh, which scripts/test.sh runs)",
        if chromium.is_some() { "found" } else { "missing" },
        if driver.is_some() { "found" } else { "missing" },
    );
    let required = std::env::var_os("MAESTRO_REQUIRE_BROWSER").is_some()
        || std::env::var_os("MAESTRO_REQUIRE_CLIENTS").is_some();
    assert!(!required, "{why}");
    eprintln!("{why}");
    None
}

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    driver: ChildGuard,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a browser window of `width` x `height` CSS pixels; `None` when
    /// the programs are missing (and not required).
    pub async fn start(width: u32, height: u32) -> Option<Self> {
        let (chromium, driver_path) = browser_programs()?;
        let profile = temp_dir("maestro-chromium-");
        let port = free_port();
        let mut cmd = Command::new(driver_path);
        cmd.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1");
        // Its own process group: dropping the browser kills chromedriver and Chromium together.
        cmd.process_group(0);
        let driver = ChildGuard::spawn("chromedriver", cmd);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start:\n{}", driver.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The broker's certificate is from its own CA, which this profile does not know.
            "acceptInsecureCerts": true,
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-sync",
                    "--disable-features=Translate,MediaRouter",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}\n{}", driver.log()))
            .to_owned();
        let browser = Self { driver, http, session: format!("{base}/session/{id}"), profile };
        browser
            .command(
                "POST",
                "/goog/cdp/execute",
                json!({"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": PROBE}}),
            )
            .await;
        // The viewport exactly as asked, like a phone's when narrow (a headless window is at
        // least 500 pixels wide by itself).
        browser
            .command(
                "POST",
                "/goog/cdp/execute",
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
                }}),
            )
            .await;
        Some(browser)
    }

    /// Shows the page's times in `zone` (an IANA name such as `Europe/Paris`), whatever the
    /// machine's.
    pub async fn time_zone(&self, zone: &str) {
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setTimezoneOverride", "params": {"timezoneId": zone}}),
        )
        .await;
    }

    /// One WebDriver command; panics on an error answer.
    pub async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {method} {path} {body}: {status} {answer}");
        answer["value"].clone()
    }

    /// Opens `url` in the current tab.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({"url": url})).await;
    }

    /// Runs `body` (a function body: `return ...`) in the page with `args`.
    pub async fn eval(&self, body: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", json!({"script": body, "args": args})).await
    }

    /// Waits until `expression` (JavaScript, evaluated in the page) is truthy; returns its
    /// value. Fails the test after [`WAIT`], naming `what` and the page's state.
    pub async fn wait(&self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        let script = format!("try {{ return ({expression}); }} catch (e) {{ return null; }}");
        loop {
            let value = self.eval(&script, json!([])).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let state = self.describe().await;
                panic!("timed out waiting for {what} ({expression})\n{state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What is on screen, for failure messages: the address, the visible view, the errors shown.
    pub async fn describe(&self) -> String {
        let v = self
            .eval(
                "const view = [...document.querySelectorAll('.view')].find((v) => !v.hidden);
                 const errors = [...document.querySelectorAll('.form-error:not([hidden]), .field-error:not([hidden]), #error-banner:not([hidden])')].map((e) => e.textContent.trim());
                 return `address ${location.href}; view ${view ? view.id : 'none'}; errors shown: ${JSON.stringify(errors)}; problems: ${JSON.stringify(window.__problems || [])}`;",
                json!([]),
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self
                .eval(
                    "const el = document.querySelector(arguments[0]);
                     return !!el && el.getClientRects().length > 0 && !el.disabled;",
                    json!([css]),
                )
                .await;
            if v == true {
                break;
            }
            if Instant::now() > deadline {
                panic!("no visible, enabled {css}\n{}", self.describe().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let found =
            self.command("POST", "/element", json!({"using": "css selector", "value": css})).await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Clicks the element `css` once it is visible and enabled.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/click"), json!({})).await;
    }

    /// Types `text` into `css` (after what it holds).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/value"), json!({"text": text})).await;
    }

    /// Empties `css`, then types `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/clear"), json!({})).await;
        if !text.is_empty() {
            self.command("POST", &format!("/element/{id}/value"), json!({"text": text})).await;
        }
    }

    /// Picks the option `value` of the select `css`, as a user would (with a change event).
    pub async fn select(&self, css: &str, value: &str) {
        self.element(css).await;
        let ok = self
            .eval(
                "const s = document.querySelector(arguments[0]);
                 if (![...s.options].some((o) => o.value === arguments[1])) return false;
                 s.value = arguments[1];
                 s.dispatchEvent(new Event('change', { bubbles: true }));
                 return true;",
                json!([css, value]),
            )
            .await;
        assert_eq!(ok, true, "{css} has no option {value}");
    }

    /// The `value` property of `css`.
    pub async fn value(&self, css: &str) -> String {
        let v = self
            .eval(
                "const el = document.querySelector(arguments[0]); return el ? el.value : null;",
                json!([css]),
            )
            .await;
        v.as_str().unwrap_or_else(|| panic!("no {css}")).to_owned()
    }

    /// The visible text of `css`, or an empty string.
    pub async fn text(&self, css: &str) -> String {
        let v = self
            .eval(
                "const el = document.querySelector(arguments[0]); return el ? el.textContent : '';",
                json!([css]),
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Window handles, for the tabs a page opened.
    pub async fn windows(&self) -> Vec<String> {
        let v = self.command("GET", "/window/handles", Value::Null).await;
        v.as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_owned()).collect()
    }

    /// Switches to the tab `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.command("POST", "/window", json!({"handle": handle})).await;
    }

    /// JavaScript errors, unhandled rejections and CSP violations since the last call: those
    /// the probe recorded in the current page, and the browser log's severe entries and CSP
    /// reports (an API answer of 4xx is logged by Chromium as a failed resource: that is the
    /// UI's business, not an error, and is left out).
    pub async fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let probe = self
            .eval("const p = window.__problems || []; window.__problems = []; return p;", json!([]))
            .await;
        for p in probe.as_array().into_iter().flatten() {
            out.push(p.as_str().unwrap_or_default().to_owned());
        }
        let log = self.command("POST", "/se/log", json!({"type": "browser"})).await;
        for entry in log.as_array().into_iter().flatten() {
            let level = entry["level"].as_str().unwrap_or_default();
            let message = entry["message"].as_str().unwrap_or_default();
            let csp = message.contains("Content Security Policy");
            let api_answer =
                message.contains("/v1/") && message.contains("Failed to load resource");
            if csp || (level == "SEVERE" && !api_answer) {
                out.push(format!("console {level}: {message}"));
            }
        }
        out
    }

    /// Fails the test if [`Browser::problems`] found any.
    pub async fn assert_no_problems(&self, when: &str) {
        let problems = self.problems().await;
        assert!(problems.is_empty(), "JavaScript errors or CSP violations {when}: {problems:#?}");
    }

    /// Every process whose command line names this browser's profile directory.
    fn profile_processes(&self) -> Vec<i32> {
        let needle = self.profile.path().to_string_lossy().into_owned();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's group (it and the Chromium it started), then any Chromium process
        // that left the group: each found by its own profile directory.
        if let Some(pid) = self.driver.pid() {
            let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
        }
        for pid in self.profile_processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.driver.kill9();
    }
}
