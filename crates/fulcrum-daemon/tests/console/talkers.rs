//! The top talkers card: the busiest prefixes per service, as the API gives them.

use serde_json::json;

use crate::{browser::Browser, fake_daemon::FakeDaemon};

#[test]
fn console_shows_the_top_talkers_per_service() {
    let daemon = FakeDaemon::start();
    let mut browser = Browser::launch();
    browser.screen(1280, 900, false);
    browser.open(&daemon.url());
    browser.wait_for(
        "the top talkers card",
        "!document.getElementById('talkers').hidden && \
         document.querySelectorAll('#talkers tr[data-prefix]').length",
    );
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('#talkers table')].map(t => t.dataset.talkersService)"
        ),
        json!(["web", "<img src=x onerror=alert(1)>"])
    );
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('[data-talkers-service=web] tr[data-prefix]')]\
             .map(r => [...r.cells].map(c => c.innerText))"
        ),
        json!([
            ["10.200.0.0/20", "250 kpps", "240,000/s"],
            ["10.200.5.0/24", "248 kpps", "239,000/s"],
            ["10.1.2.0/24", "120 pps", "3/s"]
        ])
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#talkers img').length"),
        json!(0),
        "a service name is text, never markup"
    );
    assert!(browser.text("#talkers-empty").is_none(), "not empty");
}
