//! The web UI in a real browser: headless Chromium (Debian's package) driven over WebDriver
//! (`maestro_tests::browser`) against the real broker, a real agent and the OAuth test server.
//!
//! * sign-in, with a refused token worded for the browser and kept in its field;
//! * add, edit and delete of a generic and an AWS secret, with each kind of bad input (checked
//!   by the page, refused by the broker): the message beside its input with `aria-invalid`,
//!   everything typed still there, nothing worded for the CLI; values gone after the save;
//! * a github secret's `owners`: a plain input, bad owners refused beside it, shown back on edit;
//! * sessions: the agent's state changing on screen without a refresh, activation and
//!   deactivation reaching a real agent, ending;
//! * usage history with times in their zone, filtered by action;
//! * OAuth: the redirect URI before any provider, registering one, connecting an account at
//!   the OAuth test server in a second tab, the styled callback page and its way back;
//! * teams: creating one, adding a member, changing their role and removing them from the
//!   team's page, a bad team name refused beside its input, team secrets grouped under their
//!   team in the secrets list and opened by their `team/NAME`;
//! * API tokens: bad names and no scope refused beside their inputs, a service account and a
//!   token for it made from the page, the value shown once and wiped on leaving, its scopes
//!   holding at the API, revoking (the tab's own token signs it out), a non-admin refused;
//! * a 390 px wide screen without sideways scrolling.
//!
//! Every test fails on a JavaScript error or a CSP violation in the page.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth_support;

use std::time::Duration;

use maestro_tests::agent::{AgentOptions, SANDBOX_UID, Sandbox, fuse_available, wait_until};
use maestro_tests::broker::Broker;
use maestro_tests::browser::Browser;
use oauth_support::{CLIENT_ID, CLIENT_SECRET, OAuthServer, oauth_available};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(20);

/// Signs in with `token` on `broker`'s UI.
async fn sign_in(browser: &Browser, url: &str, token: &str) {
    browser.goto(&format!("{url}/ui/")).await;
    browser.wait("the sign-in form", "!document.getElementById('view-signin').hidden").await;
    browser.fill("#signin-token", token).await;
    browser.click("#signin-form button[type=submit]").await;
    browser.wait("the secrets list", "!document.getElementById('view-secrets').hidden").await;
}

/// Goes to `hash` and waits for `view` to show.
async fn open(browser: &Browser, hash: &str, view: &str) {
    browser.eval("location.hash = arguments[0];", json!([hash])).await;
    browser.wait(view, &format!("!document.getElementById('{view}').hidden")).await;
}

/// Waits until `css` is marked invalid and returns the message beside it (the element its
/// `aria-describedby` names first).
async fn field_error(browser: &Browser, css: &str) -> String {
    let expression = format!(
        "(() => {{ const el = document.querySelector({css:?});
           if (!el || el.getAttribute('aria-invalid') !== 'true') return null;
           const slot = document.getElementById(el.getAttribute('aria-describedby').split(' ')[0]);
           return slot && !slot.hidden && slot.closest('.field, form') && slot.textContent; }})()"
    );
    let message = browser.wait(&format!("an error beside {css}"), &expression).await;
    let message = message.as_str().unwrap().to_owned();
    assert_browser_wording(&message);
    message
}

/// A message for the browser names no command, flag or environment variable.
fn assert_browser_wording(message: &str) {
    for cli in ["MAESTRO_", "`", "maestro secrets", "maestro-broker", " --", "maestro kinds"] {
        assert!(!message.contains(cli), "a message worded for the CLI ({cli}): {message}");
    }
}

/// No other input is marked invalid than the ones `allowed` (CSS selectors).
async fn invalid_inputs(browser: &Browser) -> Vec<String> {
    let v = browser
        .eval(
            "return [...document.querySelectorAll('[aria-invalid=\"true\"]')].map((e) => e.id);",
            json!([]),
        )
        .await;
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// Whether any input of the page holds `text`.
async fn any_input_holds(browser: &Browser, text: &str) -> bool {
    browser
        .eval(
            "return [...document.querySelectorAll('input, textarea')].some((i) => i.value.includes(arguments[0]));",
            json!([text]),
        )
        .await
        == true
}

async fn secret(broker: &Broker, token: &str, name: &str) -> Value {
    broker.api(token).get(&format!("/v1/secrets/{name}")).await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn signs_in_and_every_section_loads_without_errors() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    // A refused token: worded for the browser (the broker's says MAESTRO_TOKEN for the CLI).
    browser.goto(&format!("{}/ui/", broker.url)).await;
    browser.wait("the sign-in form", "!document.getElementById('view-signin').hidden").await;
    browser.fill("#signin-token", "mst_not-a-token-of-this-broker").await;
    browser.click("#signin-form button[type=submit]").await;
    let refused = field_error(&browser, "#signin-token").await;
    assert!(refused.contains("token"), "{refused}");
    // What was typed stays, to be corrected; it is not the broker's token, so it is no secret.
    assert_eq!(browser.value("#signin-token").await, "mst_not-a-token-of-this-broker");
    browser.assert_no_problems("after a refused sign-in").await;

    sign_in(&browser, &broker.url, &broker.admin_token).await;
    assert_eq!(browser.value("#signin-token").await, "", "a taken token leaves the field");
    for (hash, view) in [
        ("#/secrets", "view-secrets"),
        ("#/secrets/new", "view-secret-form"),
        ("#/sessions", "view-sessions"),
        ("#/audit", "view-audit"),
        ("#/alerts", "view-alerts"),
        ("#/oauth", "view-oauth"),
        ("#/teams", "view-teams"),
        ("#/tokens", "view-tokens"),
    ] {
        open(&browser, hash, view).await;
        browser.assert_no_problems(&format!("on {hash}")).await;
    }
    // The audit actions offered are the broker's own list (`GET /v1/meta`), not a copy.
    let offered = browser
        .eval(
            "return [...document.querySelectorAll('#audit-action option')].map((o) => o.value).filter(Boolean);",
            json!([]),
        )
        .await;
    let meta = broker.admin().get("/v1/meta").await.ok();
    assert_eq!(offered, meta["audit_actions"]);

    // Signing out leaves nothing typed behind.
    open(&browser, "#/secrets/new", "view-secret-form").await;
    browser.fill("#secret-name", "LEFT_BEHIND").await;
    browser.type_into("#secret-fields .gval", "planted-left-behind").await;
    browser.click("#sign-out").await;
    browser.wait("the sign-in form", "!document.getElementById('view-signin').hidden").await;
    assert!(!any_input_holds(&browser, "planted-left-behind").await);
    assert!(!any_input_holds(&browser, "LEFT_BEHIND").await);
    browser.assert_no_problems("after signing out").await;
}

/// The probe sees what the tests must fail on: an uncaught error and an inline script the
/// CSP blocks (the page's own code never does either).
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
            json!([]),
        )
        .await;
    browser.wait("the planted error", "window.__problems.length >= 2").await;
    let problems = browser.problems().await.join("\n");
    assert!(problems.contains("CSP violation: script-src"), "{problems}");
    assert!(problems.contains("planted failure"), "{problems}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generic_secret_is_added_edited_and_deleted_and_refusals_keep_what_was_typed() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    let token = broker.admin_token.clone();
    sign_in(&browser, &broker.url, &token).await;
    open(&browser, "#/secrets/new", "view-secret-form").await;
    browser.fill("#secret-name", "ui-generic").await;
    assert_eq!(browser.value("#secret-name").await, "UI-GENERIC", "names are typed upper case");
    browser.fill("#secret-fields .gname", "API_TOKEN").await;
    browser.type_into("#secret-fields .gval", "planted-generic-value-1").await;
    browser.fill("#secret-description", "made in the browser test").await;
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    browser.fill("#secret-tags", &many.join(", ")).await;

    // Too many tags (the page's check): beside the tags, the rest as typed.
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#secret-tags").await;
    assert!(message.contains("at most 32 tags"), "{message}");
    assert_eq!(invalid_inputs(&browser).await, ["secret-tags"]);
    assert_eq!(browser.value("#secret-fields .gval").await, "planted-generic-value-1");
    assert_eq!(browser.value("#secret-name").await, "UI-GENERIC");

    // A bad name.
    browser.fill("#secret-tags", "ci, prod").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#secret-name").await;
    assert!(message.contains("is not a secret name"), "{message}");
    assert_eq!(invalid_inputs(&browser).await, ["secret-name"], "the tags error went");
    assert_eq!(browser.value("#secret-fields .gval").await, "planted-generic-value-1");

    // A bad variable name.
    browser.fill("#secret-name", "UI_GENERIC").await;
    browser.fill("#secret-fields .gname", "9BAD").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#secret-fields .gname").await;
    assert!(message.contains("is not a variable name"), "{message}");

    // Refused by the broker, not the page: a tag given twice, shown beside the tags because
    // the broker names the field.
    browser.fill("#secret-fields .gname", "API_TOKEN").await;
    browser.fill("#secret-tags", "ci, ci").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#secret-tags").await;
    assert!(message.contains("given twice"), "{message}");
    assert_eq!(browser.value("#secret-fields .gval").await, "planted-generic-value-1");
    assert_eq!(browser.value("#secret-description").await, "made in the browser test");
    assert_eq!(broker.admin().get("/v1/secrets/UI_GENERIC").await.status, 404);

    // Saved: the page moves to the secret, and no input holds the value any more.
    browser.fill("#secret-tags", "ci, prod").await;
    browser.click("#secret-submit").await;
    browser
        .wait("the new secret's page", "location.hash === '#/secrets/UI_GENERIC' && !document.getElementById('view-secret').hidden && !document.getElementById('secret-body').hidden")
        .await;
    assert!(!any_input_holds(&browser, "planted-generic-value-1").await);
    let meta = secret(&broker, &token, "UI_GENERIC").await;
    assert_eq!(meta["field_names"], json!(["API_TOKEN"]));
    assert_eq!(meta["tags"], json!(["ci", "prod"]));
    browser.assert_no_problems("after adding a generic secret").await;

    // The same name again: the broker's refusal, worded for the browser.
    open(&browser, "#/secrets/new", "view-secret-form").await;
    browser.fill("#secret-name", "UI_GENERIC").await;
    browser.fill("#secret-fields .gname", "OTHER").await;
    browser.type_into("#secret-fields .gval", "planted-generic-value-2").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#secret-name").await;
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(browser.value("#secret-fields .gval").await, "planted-generic-value-2");

    // Leaving the form takes the values with it.
    open(&browser, "#/secrets", "view-secrets").await;
    assert!(!any_input_holds(&browser, "planted-generic-value-2").await);

    // Edit: a new variable without a value is refused beside it; with one, version 2.
    open(&browser, "#/secrets/UI_GENERIC/edit", "view-secret-form").await;
    browser.click("#generic-add-row").await;
    let new_row = "#secret-fields .generic-row:last-child";
    browser.fill(&format!("{new_row} .gname"), "EXTRA").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, &format!("{new_row} .gval")).await;
    assert!(message.contains("give EXTRA a value"), "{message}");
    browser.type_into(&format!("{new_row} .gval"), "planted-generic-extra").await;
    browser.click("#secret-submit").await;
    browser.wait("the edited secret", "location.hash === '#/secrets/UI_GENERIC'").await;
    browser
        .wait("version 2", "document.getElementById('secret-meta').textContent.includes('v2')")
        .await;
    let meta = secret(&broker, &token, "UI_GENERIC").await;
    assert_eq!(meta["field_names"], json!(["API_TOKEN", "EXTRA"]));

    // Delete from the list, through the confirmation.
    open(&browser, "#/secrets", "view-secrets").await;
    browser.click("button[aria-label='Delete UI_GENERIC']").await;
    browser.wait("the confirmation", "document.getElementById('confirm-dialog').open").await;
    browser.click("#confirm-ok").await;
    browser.wait("the empty list", "!document.getElementById('secrets-empty').hidden").await;
    assert_eq!(broker.admin().get("/v1/secrets/UI_GENERIC").await.status, 404);
    browser.assert_no_problems("after editing and deleting a generic secret").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aws_secret_is_added_edited_and_deleted_with_each_refusal_beside_its_field() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    let token = broker.admin_token.clone();
    sign_in(&browser, &broker.url, &token).await;
    open(&browser, "#/secrets/new", "view-secret-form").await;
    browser.fill("#secret-name", "UI_AWS").await;
    browser.select("#secret-kind", "aws").await;
    browser.wait("the aws fields", "!!document.getElementById('f-access_key_id')").await;
    assert_eq!(browser.value("#f-region").await, "us-east-1", "the default region is filled in");
    browser.type_into("#f-access_key_id", "AKIAPLANTED0001").await;

    // A required value missing (the page's check).
    browser.click("#secret-submit").await;
    let missing = field_error(&browser, "#f-secret_access_key").await;
    assert!(missing.contains("requires secret_access_key"), "{missing}");
    assert_eq!(browser.value("#f-access_key_id").await, "AKIAPLANTED0001");

    // A value with a space (the broker's check of the kind's field), beside that field.
    browser.type_into("#f-secret_access_key", "planted aws secret").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#f-secret_access_key").await;
    assert!(message.contains("secret_access_key") && message != missing, "{message}");
    assert_eq!(browser.value("#f-secret_access_key").await, "planted aws secret");
    assert_eq!(browser.value("#f-access_key_id").await, "AKIAPLANTED0001");

    // Sealed without hosts is fine for aws (its defaults); hosts on a plain one are not sent.
    browser.fill("#f-secret_access_key", "planted-aws-secret-9c1e").await;
    browser.fill("#f-region", "eu-west-1").await;
    browser.click("#secret-submit").await;
    browser.wait("the new secret's page", "location.hash === '#/secrets/UI_AWS'").await;
    assert!(!any_input_holds(&browser, "planted-aws-secret-9c1e").await);
    let meta = secret(&broker, &token, "UI_AWS").await;
    assert_eq!(meta["kind"], "aws");
    assert_eq!(meta["shown_fields"]["region"], "eu-west-1");

    // Edit: the region is shown back; the secret values are not.
    open(&browser, "#/secrets/UI_AWS/edit", "view-secret-form").await;
    browser
        .wait("the region shown back", "document.getElementById('f-region').value === 'eu-west-1'")
        .await;
    assert_eq!(browser.value("#f-secret_access_key").await, "");
    browser.fill("#f-region", "eu central 1").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#f-region").await;
    assert!(message.contains("region"), "{message}");
    assert_eq!(browser.value("#f-region").await, "eu central 1", "kept as typed");
    browser.fill("#f-region", "eu-central-1").await;
    browser.click("#secret-submit").await;
    browser
        .wait("version 2", "location.hash === '#/secrets/UI_AWS' && document.getElementById('secret-meta').textContent.includes('v2')")
        .await;
    assert_eq!(secret(&broker, &token, "UI_AWS").await["shown_fields"]["region"], "eu-central-1");

    // Delete from its own page.
    browser.click("#secret-delete").await;
    browser.wait("the confirmation", "document.getElementById('confirm-dialog').open").await;
    browser.click("#confirm-ok").await;
    browser
        .wait(
            "the list",
            "location.hash === '#/secrets' && !document.getElementById('secrets-empty').hidden",
        )
        .await;
    assert_eq!(broker.admin().get("/v1/secrets/UI_AWS").await.status, 404);
    browser.assert_no_problems("after the aws secret").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_secret_takes_its_owners_as_a_plain_field_shown_back_on_edit() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    let token = broker.admin_token.clone();
    sign_in(&browser, &broker.url, &token).await;
    open(&browser, "#/secrets/new", "view-secret-form").await;
    browser.fill("#secret-name", "UI_GH_WORK").await;
    browser.select("#secret-kind", "github").await;
    browser.wait("the github fields", "!!document.getElementById('f-owners')").await;
    let kind = browser.eval("return document.getElementById('f-owners').type;", json!([])).await;
    assert_eq!(kind, "text", "owners are not secret: a plain input");
    browser.type_into("#f-token", "ghp_plantedui0001").await;
    browser.type_into("#f-owners", "acme, ../x").await;
    browser.click("#secret-submit").await;
    let message = field_error(&browser, "#f-owners").await;
    assert!(message.contains("no owner or repository name"), "{message}");
    assert_eq!(browser.value("#f-owners").await, "acme, ../x", "kept as typed");
    browser.fill("#f-owners", "acme, alice/dotfiles").await;
    browser.click("#secret-submit").await;
    browser.wait("the new secret's page", "location.hash === '#/secrets/UI_GH_WORK'").await;
    assert!(!any_input_holds(&browser, "ghp_plantedui0001").await);
    let meta = secret(&broker, &token, "UI_GH_WORK").await;
    assert_eq!(meta["shown_fields"]["owners"], "acme, alice/dotfiles", "{meta}");
    assert_eq!(meta["variables"], json!([]), "a secret with owners sets no variables: {meta}");
    open(&browser, "#/secrets/UI_GH_WORK/edit", "view-secret-form").await;
    browser
        .wait(
            "the owners shown back",
            "document.getElementById('f-owners').value === 'acme, alice/dotfiles'",
        )
        .await;
    assert_eq!(browser.value("#f-token").await, "");
    browser.assert_no_problems("after the github secret with owners").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_show_the_agent_live_and_activation_reaches_a_real_agent() {
    if !fuse_available() {
        return;
    }
    let Some(browser) = Browser::start(1280, 900).await else { return };
    // Times are shown in the browser's zone, saying which: here one that is not UTC.
    browser.time_zone("Asia/Kolkata").await;
    let sb = Sandbox::new();
    sb.api.add_generic("UI_LIVE", &[("UI_LIVE_VAR", "planted-live-value-5e2")]).await.ok();
    sign_in(&browser, &sb.broker.url, &sb.token).await;
    open(&browser, "#/sessions", "view-sessions").await;
    browser.fill("#session-label", "ui-live").await;
    browser.click("#session-form button[type=submit]").await;
    browser.wait("the created session", "!document.getElementById('session-created').hidden").await;
    // The bundle the page offers for download, caught on its way to the file.
    browser
        .eval(
            "window.__bundle = null; const make = URL.createObjectURL;
             URL.createObjectURL = (blob) => { blob.text().then((t) => { window.__bundle = t; }); return make.call(URL, blob); };",
            json!([]),
        )
        .await;
    browser.click("#created-download").await;
    let bundle = browser.wait("the bundle", "window.__bundle").await;
    let bundle: Value = serde_json::from_str(bundle.as_str().unwrap()).unwrap();
    let session = bundle["session_id"].as_str().unwrap().to_owned();
    assert_eq!(bundle["broker_url"], sb.broker.url.as_str());
    let bundle_path = sb.dir().join("ui.bundle.json");
    std::fs::write(&bundle_path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let row = |state: &str| {
        format!(
            "[...document.querySelectorAll('#sessions-table tbody tr')].some((r) => r.textContent.includes('ui-live') && [...r.querySelectorAll('.badge')].some((b) => b.textContent === '{state}'))"
        )
    };
    browser.wait("not enrolled", &row("not enrolled")).await;

    // The agent enrolls and connects: the list says so without a refresh.
    let mut agent = sb.start_agent(&bundle_path, AgentOptions::default());
    browser.wait("the agent connected, live", &row("connected")).await;

    // Activate on the session's page; the agent gets it; deactivate; it goes.
    open(&browser, &format!("#/sessions/{session}"), "view-session").await;
    browser.click("#activate-UI_LIVE").await;
    browser.click("#activate-submit").await;
    assert!(
        wait_until(WITHIN, || agent.listed_names() == ["UI_LIVE"]).is_some(),
        "activation did not reach the agent: {:?}\n{}",
        agent.listed_names(),
        agent.log()
    );
    let used = agent
        .exec_as(SANDBOX_UID, &["--no-mask", "--", "sh", "-c", "printf %s \"$UI_LIVE_VAR\""])
        .ok();
    assert_eq!(used.stdout, "planted-live-value-5e2");
    browser.click("button[aria-label='Deactivate UI_LIVE']").await;
    assert!(
        wait_until(WITHIN, || agent.listed_names().is_empty()).is_some(),
        "deactivation did not reach the agent: {:?}",
        agent.listed_names()
    );
    browser.wait("nothing active", "!document.getElementById('active-empty').hidden").await;
    browser.assert_no_problems("after activating and deactivating").await;

    // Usage history: the records, with times in their zone, filtered by action.
    open(&browser, "#/audit", "view-audit").await;
    let has = |action: &str| {
        format!(
            "[...document.querySelectorAll('#audit-table tbody tr')].some((r) => r.textContent.includes('{action}'))"
        )
    };
    browser.wait("activated", &has("activated")).await;
    browser.wait("deactivated", &has("deactivated")).await;
    browser.wait("injected", &has("injected")).await;
    let time = browser.text("#audit-table tbody tr td time").await;
    assert!(
        regex_like_time_with_zone(&time) && (time.ends_with("GMT+5:30") || time.ends_with(" IST")),
        "a time without its zone in the usage history: {time:?}"
    );
    // The exact time the broker recorded (UTC) is its title.
    let title = browser
        .eval("return document.querySelector('#audit-table tbody tr td time').title;", json!([]))
        .await;
    assert!(title.as_str().unwrap().contains("Z)"), "{title}");
    browser.select("#audit-action", "activated").await;
    browser
        .wait(
            "only activations",
            "(() => { const rows = [...document.querySelectorAll('#audit-table tbody tr')];
               return rows.length > 0 && rows.every((r) => r.children[1].textContent === 'activated'); })()",
        )
        .await;
    // The secret's own page: its usage summary.
    open(&browser, "#/secrets/UI_LIVE", "view-secret").await;
    browser
        .wait(
            "the usage summary",
            "document.getElementById('usage-totals').textContent.includes('use')",
        )
        .await;

    // End the session from the list: the agent stops, the list says ended.
    open(&browser, "#/sessions", "view-sessions").await;
    browser.click("button[aria-label='End session ui-live']").await;
    browser.wait("the confirmation", "document.getElementById('confirm-dialog').open").await;
    browser.click("#confirm-ok").await;
    browser
        .wait(
            "the session ended",
            "[...document.querySelectorAll('#sessions-table tbody tr.ended')].some((r) => r.textContent.includes('ui-live'))",
        )
        .await;
    assert!(agent.wait_exit(WITHIN).is_some(), "the agent did not stop:\n{}", agent.log());
    browser.assert_no_problems("after ending the session").await;
}

/// `YYYY-MM-DD HH:MM:SS ZONE`, with a zone such as `UTC`, `CET` or `GMT+2`.
fn regex_like_time_with_zone(text: &str) -> bool {
    let mut parts = text.split(' ');
    let (Some(date), Some(clock), Some(zone)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    date.len() == 10
        && clock.len() == 8
        && clock.matches(':').count() == 2
        && !zone.is_empty()
        && zone.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_connect_against_the_test_server_from_the_page() {
    if !oauth_available() {
        return;
    }
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let server = OAuthServer::start().await;
    let broker = Broker::start();
    let token = broker.admin_token.clone();
    let meta = broker.admin().get("/v1/meta").await.ok();
    let redirect = meta["oauth_redirect_uri"].as_str().unwrap().to_owned();
    assert!(redirect.ends_with("/v1/oauth/callback"), "{redirect}");
    sign_in(&browser, &broker.url, &token).await;

    // The redirect URI before any provider is registered: on the page and in the form.
    open(&browser, "#/oauth", "view-oauth").await;
    browser.wait("the redirect URI", "!document.getElementById('providers-redirect').hidden").await;
    assert_eq!(browser.value("#providers-redirect-uri").await, redirect);
    browser.click("#provider-open").await;
    browser.wait("the provider form", "!document.getElementById('provider-form').hidden").await;
    assert_eq!(browser.value("#provider-redirect").await, redirect);

    // A bad name is refused beside it; the client secret typed stays.
    browser.fill("#provider-name", "1gh").await;
    browser.fill("#provider-client-id", CLIENT_ID).await;
    browser.type_into("#provider-client-secret", CLIENT_SECRET).await;
    browser.click("#provider-override").await;
    browser.fill("#provider-auth-url", &server.endpoint("/authorize")).await;
    browser.fill("#provider-token-url", &server.endpoint("/token")).await;
    browser.click("#provider-submit").await;
    let message = field_error(&browser, "#provider-name").await;
    assert!(message.contains("is not a provider name"), "{message}");
    assert_eq!(browser.value("#provider-client-secret").await, CLIENT_SECRET);
    assert_eq!(browser.value("#provider-token-url").await, server.endpoint("/token"));

    browser.fill("#provider-name", "gh").await;
    // No scope ticked: refused beside the scope boxes (not at the foot of the form).
    let ticked = browser
        .eval(
            "const boxes = [...document.querySelectorAll('#provider-scope-boxes input:checked')];
             for (const b of boxes) b.click();
             return boxes.map((b) => b.id);",
            json!([]),
        )
        .await;
    browser.click("#provider-submit").await;
    let message = field_error(&browser, "#provider-scope-boxes").await;
    assert!(message.contains("tick at least one scope"), "{message}");
    browser
        .eval(
            "for (const id of arguments[0]) document.getElementById(id).click();",
            json!([ticked]),
        )
        .await;
    browser.click("#provider-submit").await;
    browser
        .wait("the provider registered", "!document.getElementById('provider-added').hidden")
        .await;
    assert!(
        !any_input_holds(&browser, CLIENT_SECRET).await,
        "the client secret stayed in an input"
    );
    assert_eq!(browser.value("#added-redirect").await, redirect);

    // Connect: the provider's page opens in a new tab and sends it back to the broker; this
    // page follows the authorization until the secret is stored.
    browser.click("#added-connect").await;
    browser.wait("the connect form", "!document.getElementById('connect-form').hidden").await;
    browser.fill("#connect-name", "GITHUB").await;
    browser.click("#connect-submit").await;
    browser
        .wait(
            "the connection done",
            "document.getElementById('flow-title').textContent === 'Connected GITHUB'",
        )
        .await;
    let meta = secret(&broker, &token, "GITHUB").await;
    assert_eq!(meta["oauth"]["provider"], "gh");
    browser
        .wait(
            "the connected secret listed",
            "[...document.querySelectorAll('#oauth-table tbody tr')].some((r) => r.textContent.includes('GITHUB'))",
        )
        .await;
    browser.assert_no_problems("after connecting").await;

    // The callback page: styled like the UI, with a way back (here after a refused state).
    browser.goto(&format!("{}/v1/oauth/callback?state=bogus&code=nothing", broker.url)).await;
    browser.wait("the callback page", "!!document.getElementById('callback-title')").await;
    assert_eq!(browser.text("#callback-title").await, "Authorization failed");
    let styled = browser
        .eval(
            "const card = document.querySelector('.card');
             return document.styleSheets.length === 1 && getComputedStyle(card).borderLeftWidth === '4px';",
            json!([]),
        )
        .await;
    assert_eq!(styled, true, "the callback page is not styled");
    browser.assert_no_problems("on the callback page").await;
    browser.click("#callback-back").await;
    browser.wait("the OAuth section again", "!document.getElementById('view-oauth').hidden").await;
    browser.assert_no_problems("back from the callback page").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_390_pixel_screen_never_scrolls_sideways() {
    let Some(browser) = Browser::start(390, 844).await else { return };
    let broker = Broker::start();
    let api = broker.admin();
    api.post(
        "/v1/secrets",
        json!({"name": "A_RATHER_LONG_SECRET_NAME_FOR_A_NARROW_SCREEN_0123456789", "kind": "aws",
               "fields": {"access_key_id": "AKIAPLANTED0002", "secret_access_key": "planted-narrow"},
               "tags": ["production", "continuous-integration", "a-third-tag"],
               "description": "a description long enough to need wrapping on a phone screen"}),
    )
    .await
    .ok();
    let (session, _) =
        api.new_session(json!({"label": "a-label-for-the-narrow-screen-test"})).await;
    sign_in(&browser, &broker.url, &broker.admin_token).await;
    let name = "A_RATHER_LONG_SECRET_NAME_FOR_A_NARROW_SCREEN_0123456789";
    let drawn = |css: &str| format!("!!document.querySelector({css:?})");
    for (hash, view, ready) in [
        ("#/secrets".to_owned(), "view-secrets", drawn("#secrets-table tbody tr")),
        (
            format!("#/secrets/{name}"),
            "view-secret",
            drawn("#secret-body:not([hidden]) #secret-meta dt"),
        ),
        (format!("#/secrets/{name}/edit"), "view-secret-form", drawn("#f-access_key_id")),
        ("#/secrets/new".to_owned(), "view-secret-form", drawn("#secret-fields .gname")),
        ("#/sessions".to_owned(), "view-sessions", drawn("#sessions-table tbody tr")),
        (
            format!("#/sessions/{session}"),
            "view-session",
            drawn("#session-body:not([hidden]) #session-meta dt"),
        ),
        ("#/audit".to_owned(), "view-audit", drawn("#audit-table tbody tr")),
        ("#/alerts".to_owned(), "view-alerts", drawn("#alerts-empty:not([hidden])")),
        ("#/oauth".to_owned(), "view-oauth", drawn("#providers-redirect:not([hidden])")),
        ("#/tokens".to_owned(), "view-tokens", drawn("#tokens-table tbody tr")),
    ] {
        open(&browser, &hash, view).await;
        browser.wait(&format!("{hash} drawn"), &ready).await;
        let overflow = browser
            .eval(
                "const width = document.documentElement.clientWidth;
                 const wide = [...document.querySelectorAll('body *')].filter((e) => {
                   const r = e.getBoundingClientRect();
                   return r.width > 0 && r.right > width + 1 && !e.closest('.table-wrap');
                 }).slice(0, 5).map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`);
                 return { width, scroll: document.documentElement.scrollWidth, inner: innerWidth, wide };",
                json!([]),
            )
            .await;
        assert_eq!(overflow["inner"], 390, "{hash}: the viewport is not 390 px: {overflow}");
        assert!(
            overflow["scroll"].as_i64() <= overflow["width"].as_i64(),
            "{hash} scrolls sideways at 390 px: {overflow}"
        );
        browser.assert_no_problems(&format!("on {hash} at 390 px")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn teams_and_members_are_managed_from_the_page_and_team_secrets_are_grouped() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    let owner = broker.admin();
    let bob = broker.add_user("bob");
    let members = || async {
        let team = broker.admin().get("/v1/teams/infra").await.ok();
        team["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{}:{}", m["user"].as_str().unwrap(), m["role"].as_str().unwrap()))
            .collect::<Vec<_>>()
    };
    sign_in(&browser, &broker.url, &broker.admin_token).await;
    open(&browser, "#/teams", "view-teams").await;
    browser.wait("no team yet", "!document.getElementById('teams-empty').hidden").await;

    // A bad name is refused beside its input, and nothing is created.
    browser.fill("#team-name", "9lives").await;
    browser.click("#team-form button[type=submit]").await;
    browser
        .wait(
            "the name marked invalid",
            "document.getElementById('team-name').getAttribute('aria-invalid') === 'true'",
        )
        .await;
    assert_eq!(owner.get("/v1/teams").await.ok(), json!([]));

    // Created (typed in capitals: the input lowers them), then its page with the owner.
    browser.fill("#team-name", "Infra").await;
    browser.click("#team-form button[type=submit]").await;
    browser.wait("the team's page", "!document.getElementById('view-team').hidden").await;
    browser
        .wait("the title", "document.getElementById('team-title').textContent === 'Team infra'")
        .await;
    assert_eq!(owner.get("/v1/teams").await.ok()[0]["role"], "owner");

    // Bob added as member, lowered to viewer, then removed, all from the page.
    browser.fill("#member-user", "bob").await;
    browser.select("#member-role", "member").await;
    browser.click("#member-form button[type=submit]").await;
    browser.wait("bob's row", "!!document.getElementById('role-bob')").await;
    assert!(members().await.contains(&"bob:member".to_owned()));
    browser.select("#role-bob", "viewer").await;
    browser.click("button[aria-label='Save the role of bob']").await;
    let start = std::time::Instant::now();
    while !members().await.contains(&"bob:viewer".to_owned()) {
        assert!(start.elapsed() < WITHIN, "the role was not saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Team secrets are listed under their team, and open by team/NAME.
    owner
        .post(
            "/v1/secrets",
            json!({"name": "infra/DB", "kind": "generic", "fields": {"TEAM_DB": "planted-ui-team-1"}}),
        )
        .await
        .ok();
    owner.add_generic("MINE", &[("MINE_VAR", "planted-ui-mine-2")]).await.ok();
    open(&browser, "#/secrets", "view-secrets").await;
    let groups = browser
        .wait(
            "the team's group",
            "(() => { const g = [...document.querySelectorAll('#secrets-table .group-row')].map((r) => r.textContent);
               return g.length === 2 && g; })()",
        )
        .await;
    assert_eq!(groups, json!(["Yours", "Team infra"]));
    browser.click("#secrets-table a[href='#/secrets/infra%2FDB']").await;
    browser.wait("the team secret's page", "!document.getElementById('view-secret').hidden").await;
    browser
        .wait("its name", "document.getElementById('secret-title').textContent === 'infra/DB'")
        .await;
    // The team page lists it; bob (a viewer) sees the team and its secret.
    open(&browser, "#/teams/infra", "view-team").await;
    browser
        .wait(
            "the team's secret",
            "document.getElementById('team-secrets').textContent.includes('infra/DB')",
        )
        .await;
    broker.api(&bob).get("/v1/secrets/infra%2FDB").await.ok();

    browser.click("button[aria-label='Remove bob from infra']").await;
    browser.wait("the confirmation", "document.getElementById('confirm-dialog').open").await;
    browser.click("#confirm-ok").await;
    browser.wait("bob's row gone", "!document.getElementById('role-bob')").await;
    assert!(!members().await.iter().any(|m| m.starts_with("bob:")));
    broker.api(&bob).get("/v1/secrets/infra%2FDB").await.expect_error(404, "not_found");
    browser.assert_no_problems("on the teams pages").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_tokens_and_service_accounts_are_managed_from_the_page() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let broker = Broker::start();
    let admin = broker.admin();
    sign_in(&browser, &broker.url, &broker.admin_token).await;
    open(&browser, "#/tokens", "view-tokens").await;
    // The scopes offered are the broker's own list (`GET /v1/meta`), in its order.
    let offered = browser
        .wait(
            "the scope checkboxes",
            "(() => { const v = [...document.querySelectorAll('#token-scope-boxes input')].map((i) => i.value);
               return v.length > 0 && v; })()",
        )
        .await;
    assert_eq!(offered, admin.get("/v1/meta").await.ok()["token_scopes"]);
    assert_eq!(browser.value("#token-expiry").await, (90 * 86400).to_string());

    // A bad name: refused beside the name, what was typed and ticked kept.
    browser.fill("#token-name", "-bad name").await;
    browser.click("#tscope-secrets-read").await;
    browser.click("#token-form button[type=submit]").await;
    let message = field_error(&browser, "#token-name").await;
    assert!(message.contains("token name"), "{message}");
    assert_eq!(browser.value("#token-name").await, "-bad name");
    assert_eq!(
        browser
            .eval("return document.getElementById('tscope-secrets-read').checked;", json!([]))
            .await,
        true
    );
    // No scope ticked: refused beside the scopes, the name kept.
    browser.fill("#token-name", "ci-read").await;
    browser.click("#tscope-secrets-read").await;
    browser.click("#token-form button[type=submit]").await;
    let message = field_error(&browser, "#token-scope-boxes").await;
    assert!(message.contains("scope"), "{message}");
    assert_eq!(browser.value("#token-name").await, "ci-read");
    assert_eq!(invalid_inputs(&browser).await, ["token-scope-boxes"]);
    assert_eq!(admin.get("/v1/tokens").await.ok().as_array().unwrap().len(), 1);

    // A service account, then a token for it with secrets:read.
    browser.fill("#account-name", "ci").await;
    browser.fill("#account-description", "deploys from CI").await;
    browser.click("#account-form button[type=submit]").await;
    browser
        .wait(
            "the account's row",
            "!!document.querySelector(\"button[aria-label='Remove service account ci']\")",
        )
        .await;
    browser
        .wait("the account offered", "!!document.querySelector('#token-for option[value=ci]')")
        .await;
    assert_eq!(admin.get("/v1/service-accounts").await.ok()[0]["name"], "ci");
    browser.select("#token-for", "ci").await;
    browser.select("#token-expiry", &(7 * 86400).to_string()).await;
    browser.click("#tscope-secrets-read").await;
    browser.click("#token-form button[type=submit]").await;
    browser.wait("the token shown", "!document.getElementById('token-created').hidden").await;
    let value = browser.value("#token-created-value").await;
    assert!(value.starts_with("mst_"), "{value}");
    assert!(
        browser
            .text("#token-created")
            .await
            .to_lowercase()
            .contains("shown once: store it now; the broker keeps only its hash")
    );
    browser
        .wait("its row", "!!document.querySelector(\"button[aria-label='Revoke token ci-read']\")")
        .await;
    let row = browser
        .eval(
            "return document.querySelector(\"button[aria-label='Revoke token ci-read']\").closest('tr').textContent;",
            json!([]),
        )
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains("ci") && row.contains("secrets:read") && row.contains("never used"),
        "{row}"
    );
    // Never in the address or the tab's storage.
    let kept = browser
        .eval(
            "return location.href + JSON.stringify(sessionStorage) + JSON.stringify(localStorage);",
            json!([]),
        )
        .await;
    assert!(!kept.as_str().unwrap().contains(&value));

    // It works for what its scope allows, and only that.
    let ci = broker.api(&value);
    ci.get("/v1/secrets").await.ok();
    ci.post("/v1/secrets", json!({"name": "NOPE", "kind": "generic", "fields": {"NOPE": "x"}}))
        .await
        .expect_error(403, "forbidden");

    // Leaving the section wipes the value.
    open(&browser, "#/secrets", "view-secrets").await;
    assert!(!any_input_holds(&browser, &value).await, "the token outlived its section");
    open(&browser, "#/tokens", "view-tokens").await;
    browser.wait("the box gone", "document.getElementById('token-created').hidden").await;

    // Revoked from the page: the API refuses it.
    browser
        .wait("its row", "!!document.querySelector(\"button[aria-label='Revoke token ci-read']\")")
        .await;
    browser.click("button[aria-label='Revoke token ci-read']").await;
    browser.wait("the confirmation", "document.getElementById('confirm-dialog').open").await;
    assert!(browser.text("#confirm-text").await.contains("refused"));
    browser.click("#confirm-ok").await;
    browser
        .wait(
            "its row gone",
            "!document.querySelector(\"button[aria-label='Revoke token ci-read']\")",
        )
        .await;
    ci.get("/v1/secrets").await.expect_error(401, "unauthorized");

    // The service account removed, its confirmation naming its tokens (none left).
    browser.click("button[aria-label='Remove service account ci']").await;
    browser.wait("the confirmation", "document.getElementById('confirm-dialog').open").await;
    assert!(browser.text("#confirm-text").await.contains("no tokens"));
    browser.click("#confirm-ok").await;
    browser.wait("no account", "!document.getElementById('accounts-empty').hidden").await;
    assert_eq!(admin.get("/v1/service-accounts").await.ok(), json!([]));
    browser.assert_no_problems("on the tokens page").await;

    // A team the user owns: "Tokens of" offers it; its tokens belong to its service accounts.
    admin.post("/v1/teams", json!({"name": "infra"})).await.ok();
    admin
        .post(
            "/v1/secrets",
            json!({"name": "infra/DB", "kind": "generic", "fields": {"DB_URL": "x"}}),
        )
        .await
        .ok();
    browser.click("#tokens-refresh").await;
    browser
        .wait("the team offered", "!!document.querySelector('#tokens-owner option[value=infra]')")
        .await;
    browser.select("#tokens-owner", "infra").await;
    browser.wait("no account yet", "!document.getElementById('accounts-empty').hidden").await;
    browser.fill("#token-name", "deploy").await;
    browser.click("#tscope-secrets-read").await;
    browser.click("#token-form button[type=submit]").await;
    let message = field_error(&browser, "#token-for").await;
    assert!(message.contains("service account"), "{message}");
    browser.fill("#account-name", "ci").await;
    browser.click("#account-form button[type=submit]").await;
    browser
        .wait(
            "the team's account offered",
            "!!document.querySelector('#token-for option[value=\"infra/ci\"]')",
        )
        .await;
    assert_eq!(admin.get("/v1/service-accounts?team=infra").await.ok()[0]["name"], "infra/ci");
    assert_eq!(admin.get("/v1/service-accounts").await.ok(), json!([]), "not the user's own");
    browser.select("#token-for", "infra/ci").await;
    browser.click("#token-form button[type=submit]").await;
    browser.wait("the token shown", "!document.getElementById('token-created').hidden").await;
    let team_value = browser.value("#token-created-value").await;
    let listed = admin.get("/v1/tokens?team=infra").await.ok();
    assert_eq!(listed[0]["service_account"], "infra/ci", "{listed}");
    // The team's token acts as the team: it sees the team's secret, by the team's name for it.
    let seen = broker.api(&team_value).get("/v1/secrets").await.ok();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    browser.click("#token-created-done").await;
    browser.select("#tokens-owner", "").await;
    browser
        .wait("the user's own again", "document.getElementById('tokens-owner').value === ''")
        .await;
    browser.assert_no_problems("on a team's tokens").await;

    // Revoking the tab's own token says so, and the tab goes back to sign-in.
    let own = admin
        .post("/v1/tokens", json!({"name": "tab", "scopes": ["admin"], "expires_in_secs": 3600}))
        .await
        .ok()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.click("#sign-out").await;
    sign_in(&browser, &broker.url, &own).await;
    open(&browser, "#/tokens", "view-tokens").await;
    browser
        .wait("its row", "!!document.querySelector(\"button[aria-label='Revoke token tab']\")")
        .await;
    browser.click("button[aria-label='Revoke token tab']").await;
    browser.wait("the confirmation", "document.getElementById('confirm-dialog').open").await;
    assert!(browser.text("#confirm-text").await.contains("this tab signed in with"));
    browser.click("#confirm-ok").await;
    browser.wait("the sign-in form", "!document.getElementById('view-signin').hidden").await;
    broker.api(&own).get("/v1/secrets").await.expect_error(401, "unauthorized");

    // A token without admin: a clear refusal, no broken page.
    let reader =
        admin.post("/v1/tokens", json!({"name": "reader", "scopes": ["secrets:read"]})).await.ok()
            ["token"]
            .as_str()
            .unwrap()
            .to_owned();
    sign_in(&browser, &broker.url, &reader).await;
    open(&browser, "#/tokens", "view-tokens").await;
    browser.wait("the refusal", "!document.getElementById('tokens-refused').hidden").await;
    let refusal = browser.text("#tokens-refused").await;
    assert!(refusal.contains("admin scope"), "{refusal}");
    assert_browser_wording(&refusal);
    assert!(
        browser.eval("return document.getElementById('tokens-body').hidden;", json!([])).await
            == true
    );
    browser.assert_no_problems("on the tokens page without admin").await;
}
