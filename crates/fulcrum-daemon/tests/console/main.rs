//! The web console as a person sees it: the real page in real headless Chromium (Debian's
//! `chromium`, installed by scripts/setup.sh), fed a fixed status by a tiny HTTP server on
//! loopback that stands in for the daemon.
//!
//! Chromium is driven over the DevTools protocol (a websocket on loopback): `--dump-dom` runs
//! the page's fetches fine, but a headless window is never narrower than 500 px, so a phone is
//! emulated with `Emulation.setDeviceMetricsOverride` instead, and what is checked is what the
//! page renders (`innerText`, computed styles, layout boxes), not only its markup.
//!
//! Set `FULCRUM_CHROMIUM` to use another Chromium binary.

mod browser;
mod fake_daemon;
mod fixture;
mod talkers;

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use browser::Browser;
use fake_daemon::{FakeDaemon, Mode};
use fixture::{HOSTILE, LONG_URL, RELOAD_ERROR, UNREACHABLE, V6_BACKEND};

fn backend_sel(address: &str, inner: &str) -> String {
    format!("[data-backend=\"{address}\"] {inner}")
}

/// The health a person reads on a backend, lower-cased (the page shows it in capitals).
fn health_text(browser: &mut Browser, address: &str) -> String {
    browser
        .text(&backend_sel(address, "[data-field=health]"))
        .unwrap_or_else(|| panic!("no visible health for {address}"))
        .trim()
        .trim_start_matches(['\u{2714}', '\u{2716}', '?'])
        .trim()
        .to_lowercase()
}

/// Everything a desktop user should see, then a refresh.
#[test]
fn console_shows_services_backends_health_drain_errors_and_changes() {
    let daemon = FakeDaemon::start();
    let mut browser = Browser::launch();
    browser.screen(1280, 900, false);
    browser.open(&daemon.url());

    assert_eq!(browser.eval("document.title"), json!("Fulcrum"));
    assert!(
        browser.text("#error-banner").is_none(),
        "no error banner while the API answers"
    );
    let refreshed = browser.text("#refreshed").expect("a refresh line");
    assert!(refreshed.starts_with("Refreshed "), "{refreshed:?}");

    // Services in order, with their address and rates.
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('[data-service]')].map(s => s.dataset.service)"),
        json!(["web", "dns", "web6"])
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=name]")
            .as_deref(),
        Some("web")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=name]")
            .as_deref(),
        Some("dns")
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=endpoint]")
            .as_deref(),
        Some("10.66.99.1:80/tcp")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=endpoint]")
            .as_deref(),
        Some("10.66.99.2:53/udp")
    );
    // An IPv6 VIP is bracketed before its port; the forwarding mode and a VIP that does
    // not answer pings are said beside it.
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=endpoint]")
            .as_deref(),
        Some("[2001:db8:100::1]:443/tcp")
    );
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=forwarding]")
            .as_deref(),
        Some("gue")
    );
    assert_eq!(
        browser
            .attr("[data-service=web6]", "data-forwarding")
            .as_deref(),
        Some("gue")
    );
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=echo]")
            .as_deref(),
        Some("no echo")
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=forwarding]")
            .as_deref(),
        Some("l2-dsr")
    );
    assert!(
        browser
            .text("[data-service=web] [data-field=echo]")
            .is_none(),
        "a VIP that answers pings has no badge"
    );
    assert_eq!(
        browser
            .text("[data-service=web6] [data-field=serving]")
            .as_deref(),
        Some("1 of 1 serving")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=pps]")
            .as_deref(),
        Some("0 pps")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=bps]")
            .as_deref(),
        Some("0 bit/s")
    );
    assert_eq!(
        browser
            .text("[data-service=web] [data-field=serving]")
            .as_deref(),
        Some("1 of 3 serving")
    );
    assert_eq!(
        browser
            .text("[data-service=dns] [data-field=serving]")
            .as_deref(),
        Some("0 of 2 serving"),
        "one is out of the data plane, the other drained and leaving"
    );

    // Each backend: its address and its health in words.
    for (address, health) in [
        ("10.66.0.11", "up"),
        ("10.66.0.12", "down"),
        ("10.66.0.13", "unknown"),
        ("10.66.0.21", "up"),
        ("10.66.0.22", "up"),
        (V6_BACKEND, "up"),
    ] {
        assert_eq!(
            browser
                .text(&backend_sel(address, "[data-field=address]"))
                .as_deref(),
            Some(address)
        );
        assert_eq!(health_text(&mut browser, address), health, "{address}");
        assert_eq!(
            browser
                .attr(&format!("[data-backend=\"{address}\"]"), "data-health")
                .as_deref(),
            Some(health)
        );
    }
    // ... and in colour too: three different badge colours.
    let colours = browser.eval(
        "['up', 'down', 'unknown'].map(h => getComputedStyle(\
         document.querySelector(`[data-field=health][data-health=${h}]`)).backgroundColor)",
    );
    let colours: Vec<&str> = colours
        .as_array()
        .expect("colours")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(colours.len(), 3);
    assert!(
        colours[0] != colours[1] && colours[1] != colours[2] && colours[0] != colours[2],
        "{colours:?}"
    );

    // Drained: marked on that backend and no other.
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.22", "[data-field=drained]"))
            .as_deref(),
        Some("drained")
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('[data-field=drained]').length"),
        json!(1)
    );
    assert_eq!(
        browser
            .attr("[data-backend=\"10.66.0.22\"]", "data-drained")
            .as_deref(),
        Some("true")
    );

    // Weight, rates and new flows of a backend.
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.13", "[data-field=weight]"))
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "[data-field=pps]"))
            .as_deref(),
        Some("1.2 kpps")
    );
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "[data-field=bps]"))
            .as_deref(),
        Some("7.9 Mbit/s")
    );
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "[data-field=new-flows]"))
            .as_deref(),
        Some("4,321")
    );
    // On a desktop the column headers label the numbers.
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.11", "td.weight"))
            .as_deref(),
        Some("1")
    );
    let headers = browser
        .text("[data-service=web] thead")
        .expect("column headers");
    assert!(
        headers.contains("Weight") && headers.contains("New flows"),
        "{headers:?}"
    );

    // The last error, where it belongs.
    let error = browser
        .text(&backend_sel("10.66.0.12", "[data-field=last-error]"))
        .expect("error");
    assert_eq!(error, format!("connect refused: GET {LONG_URL}"));
    // Left out of the data plane, and leaving: both said on the backend's row.
    let left_out = browser
        .text(&backend_sel("10.66.0.21", "[data-field=data-plane-error]"))
        .expect("the data plane's reason");
    assert!(left_out.contains(UNREACHABLE), "{left_out:?}");
    assert!(
        browser
            .text(&backend_sel("10.66.0.22", "[data-field=leaving]"))
            .is_some_and(|t| t == "leaving"),
        "a leaving backend is badged"
    );
    assert!(
        browser
            .text(&backend_sel("10.66.0.12", "[data-check=http]"))
            .expect("check")
            .contains("failing")
    );

    // Recent changes, newest first, with the API's markup shown as text and never run.
    assert_eq!(
        browser.eval("document.querySelectorAll('#events [data-event]').length"),
        json!(3)
    );
    let first = browser
        .text("#events [data-event]:first-child")
        .expect("a change");
    assert!(first.contains("web / 10.66.0.12"), "{first:?}");
    assert!(
        first.contains("became unhealthy: connect refused"),
        "{first:?}"
    );
    assert_eq!(
        browser
            .attr("#events [data-event]:first-child time", "datetime")
            .as_deref(),
        Some("2026-01-02T03:04:05Z")
    );
    let last = browser
        .text("#events [data-event]:last-child [data-field=message]")
        .expect("message");
    assert_eq!(last, HOSTILE);
    assert_eq!(
        browser.eval("document.querySelectorAll('img, b').length"),
        json!(0)
    );
    assert_eq!(browser.eval("document.title"), json!("Fulcrum"));

    // A refused reload is reported, with the API's reason.
    let refused = browser
        .text("#reload-error")
        .expect("the refused reload is shown");
    assert!(
        refused.starts_with("The last reload was refused"),
        "{refused:?}"
    );
    assert!(refused.ends_with(RELOAD_ERROR), "{refused:?}");

    // Counters sit behind a disclosure.
    assert_eq!(
        browser.attr("[data-counter=tx]", "data-counter").as_deref(),
        Some("tx")
    );
    assert!(
        browser.text("[data-counter=tx]").is_none(),
        "counters start folded"
    );
    browser.eval("document.querySelector('#counters-section summary').click()");
    assert_eq!(
        browser.text("[data-counter=tx]").as_deref(),
        Some("123,456")
    );

    // The whole screen, as a person reads it.
    browser.screenshot("desktop");
    assert!(browser.widest() <= 1280.0);
    assert_eq!(
        browser.attr("body", "data-overflow").as_deref(),
        Some("false")
    );
    let screen = browser.body_text();
    for needle in [
        "web",
        "dns",
        "10.66.0.13",
        "UNKNOWN",
        "DOWN",
        "Recent changes",
        "drained",
    ] {
        assert!(
            screen.contains(needle),
            "{needle:?} not on screen:\n{screen}"
        );
    }

    // Live: the next answers (another rate) show up without a reload.
    let before = browser
        .text("[data-service=web] [data-field=pps]")
        .expect("web rate");
    let refreshes: u64 = browser
        .attr("body", "data-refreshes")
        .expect("refreshes")
        .parse()
        .expect("number");
    browser.wait_for(
        "a later answer is shown",
        &format!(
            "Number(document.body.dataset.refreshes) >= {} && \
             document.querySelector('[data-service=web] [data-field=pps]').innerText !== {}",
            refreshes + 2,
            json!(before)
        ),
    );
    assert!(daemon.state.api_requests.load(Ordering::SeqCst) >= 3);

    // The header counts backends, naming only the states that occur (it once printed
    // "null null" when nothing was unknown or drained).
    let totals = "document.querySelector('#totals').textContent";
    assert_eq!(
        browser.eval(totals),
        json!("4 up 1 down 1 unknown 1 drained")
    );
    daemon.state.all_up.store(true, Ordering::SeqCst);
    browser.wait_for(
        "every backend up in the header",
        &format!("{totals}.startsWith('6 up')"),
    );
    assert_eq!(browser.eval(totals), json!("6 up 0 down"));
}

/// On a 390 px phone every backend is a card, and nothing is wider than the screen.
#[test]
fn console_fits_a_phone_without_horizontal_scrolling() {
    let daemon = FakeDaemon::start();
    let mut browser = Browser::launch();
    browser.screen(390, 844, true);
    browser.open(&daemon.url());
    browser.screenshot("phone");

    assert_eq!(
        browser.eval("document.documentElement.clientWidth"),
        json!(390)
    );
    assert_eq!(
        browser.attr("body", "data-overflow").as_deref(),
        Some("false")
    );
    // Measured here too, element by element, so nothing hides by being clipped.
    let widest = browser.widest();
    assert!(
        widest <= 390.0,
        "the page is {widest} px wide on a 390 px screen"
    );

    // Cards, not a table: no column headers, each backend a block as wide as the screen allows.
    assert!(
        browser.text("[data-service=web] thead").is_none(),
        "column headers hidden on a phone"
    );
    assert_eq!(
        browser.eval(
            "getComputedStyle(document.querySelector('[data-backend=\"10.66.0.12\"]')).display"
        ),
        json!("grid")
    );
    // The same facts are readable.
    assert_eq!(health_text(&mut browser, "10.66.0.12"), "down");
    assert_eq!(health_text(&mut browser, "10.66.0.13"), "unknown");
    assert_eq!(
        browser
            .text(&backend_sel("10.66.0.22", "[data-field=drained]"))
            .as_deref(),
        Some("drained")
    );
    // Each number carries its label on a card (on a desktop the column header does).
    let weight = browser
        .text(&backend_sel("10.66.0.13", "td.weight"))
        .expect("weight");
    assert_eq!(
        weight.split_whitespace().collect::<Vec<_>>(),
        ["Weight", "2"]
    );
    let flows = browser
        .text(&backend_sel("10.66.0.13", "td.new-flows"))
        .expect("new flows");
    assert_eq!(
        flows.split_whitespace().collect::<Vec<_>>(),
        ["New", "flows", "4,321"]
    );
    let error = browser
        .text(&backend_sel("10.66.0.12", "[data-field=last-error]"))
        .expect("error");
    assert!(error.starts_with("connect refused"), "{error:?}");
    assert!(
        browser
            .body_text()
            .contains("became unhealthy: connect refused")
    );

    // Other screens, from a small phone to a desktop, and the widths where the layout changes.
    for (width, mobile) in [
        (320, true),
        (768, true),
        (899, true),
        (900, false),
        (1299, false),
        (1300, false),
    ] {
        browser.screen(width, 900, mobile);
        // A desktop's scroll bar takes its width from the page.
        let room = browser.eval("document.documentElement.clientWidth");
        let room = room.as_f64().expect("a width");
        assert!(
            room > f64::from(width) - 20.0 && room <= f64::from(width),
            "{room}"
        );
        let widest = browser.widest();
        assert!(
            widest <= room,
            "the page is {widest} px wide in {room} px on a {width} px screen"
        );
    }
    browser.screen(390, 844, true);

    // The measure is not vacuous: something too wide is caught.
    browser.eval(
        "document.querySelector('[data-service=web]').append(\
         Object.assign(document.createElement('div'), { style: 'width: 800px', textContent: 'x' }))",
    );
    let widest = browser.widest();
    assert!(
        widest > 390.0,
        "an 800 px element was not measured ({widest})"
    );
}

/// When the API stops answering the banner says so and the last data stays; it clears again.
#[test]
fn console_shows_an_error_banner_while_the_api_fails() {
    let daemon = FakeDaemon::start();
    let mut browser = Browser::launch();
    browser.screen(390, 844, true);
    browser.open(&daemon.url());
    assert!(browser.text("#error-banner").is_none());

    daemon.set_mode(Mode::Error);
    let banner = browser.wait_for(
        "the banner reports HTTP 500",
        "(() => { const b = document.getElementById('error-banner'); \
          return b.checkVisibility() && b.innerText.includes('HTTP 500') ? b.innerText : null; })()",
    );
    let banner = banner.as_str().expect("banner text");
    assert!(
        banner.starts_with("Cannot get the status from the Fulcrum API"),
        "{banner:?}"
    );
    assert!(banner.contains("Showing data from"), "{banner:?}");
    browser.screenshot("phone-api-failing");
    assert_eq!(browser.attr("body", "data-state").as_deref(), Some("error"));
    assert!(
        browser
            .text("#refreshed")
            .expect("refresh line")
            .contains("stale")
    );
    // The last known state stays on screen.
    assert_eq!(health_text(&mut browser, "10.66.0.12"), "down");
    assert_eq!(
        browser.attr("body", "data-overflow").as_deref(),
        Some("false")
    );

    daemon.set_mode(Mode::Hangup);
    browser.wait_for(
        "the banner reports a network error",
        "document.getElementById('error-banner').innerText.includes('network error')",
    );

    daemon.set_mode(Mode::Ok);
    browser.wait_for(
        "the banner goes away once the API answers",
        "document.body.dataset.state === 'ok' && \
         !document.getElementById('error-banner').checkVisibility()",
    );
    assert!(browser.text("#error-banner").is_none());
    assert!(
        !browser
            .text("#refreshed")
            .expect("refresh line")
            .contains("stale")
    );

    // Once a reload succeeds the notice about the refused one goes too.
    assert!(browser.text("#reload-error").is_some());
    daemon.state.reload_refused.store(false, Ordering::SeqCst);
    browser.wait_for(
        "the refused-reload notice goes away",
        "!document.getElementById('reload-error').checkVisibility()",
    );
}
