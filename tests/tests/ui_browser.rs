//! The web UI in a real browser: headless Chromium (Debian's package) driven over WebDriver
//! against the real broker. Every step fails the test on a JavaScript error or a CSP violation.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use maestro_tests::broker::Broker;
use maestro_tests::browser::Browser;

/// Signs in with `token` on a fresh tab of `broker`'s UI.
async fn sign_in(browser: &Browser, broker: &Broker, token: &str) {
    browser.goto(&format!("{}/ui/", broker.url)).await;
    browser.wait("the sign-in form", "!document.getElementById('view-signin').hidden").await;
    browser.fill("#signin-token", token).await;
    browser.click("#signin-form button[type=submit]").await;
    browser.wait("the secrets list", "!document.getElementById('view-secrets').hidden").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_section_loads_without_errors() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    sign_in(&browser, &broker, &broker.admin_token).await;
    for (hash, view) in [
        ("#/secrets", "view-secrets"),
        ("#/secrets/new", "view-secret-form"),
        ("#/sessions", "view-sessions"),
        ("#/audit", "view-audit"),
        ("#/alerts", "view-alerts"),
        ("#/oauth", "view-oauth"),
    ] {
        browser.eval("location.hash = arguments[0];", serde_json::json!([hash])).await;
        browser.wait(view, &format!("!document.getElementById('{view}').hidden")).await;
        browser.assert_no_problems(&format!("on {hash}")).await;
    }
}

/// The harness sees what it must fail on: an uncaught error and an inline script the CSP
/// blocks (the page's own code never does either).
#[tokio::test(flavor = "multi_thread")]
async fn the_probe_reports_errors_and_csp_violations() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    browser.goto(&format!("{}/ui/", broker.url)).await;
    browser.wait("the sign-in form", "!document.getElementById('view-signin').hidden").await;
    browser.assert_no_problems("after loading the page").await;
    browser
        .eval(
            "const s = document.createElement('script'); s.textContent = 'window.x = 1';
             document.body.appendChild(s);
             setTimeout(() => { throw new Error('planted failure'); }, 0);",
            serde_json::json!([]),
        )
        .await;
    browser.wait("the planted error", "window.__problems.length >= 2").await;
    let problems = browser.problems().await.join("\n");
    assert!(problems.contains("CSP violation: script-src"), "{problems}");
    assert!(problems.contains("planted failure"), "{problems}");
}
