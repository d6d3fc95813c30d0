//! The dashboard in a real browser: Debian's chromium driven headless through chromedriver.
//!
//! Skipped (with a message) where chromium or chromedriver is missing, unless
//! TELEJOB_REQUIRE_BROWSER is set (as `.ci/run` does after installing them). Screenshots of the
//! form and of a run page are saved to `<target dir>/test-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use telejob_e2e::{days_ago, tarball, telejob_bin, write_script_tarball};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Chromium and its WebDriver, or none (the test is skipped, and says so) when they are not
/// installed and not required.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let driver = ["/usr/bin/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ if std::env::var_os("TELEJOB_REQUIRE_BROWSER").is_some() => {
            panic!("TELEJOB_REQUIRE_BROWSER is set but chromium or chromedriver is missing")
        }
        _ => {
            eprintln!("skipped: chromium and chromedriver are not installed");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

async fn browser(chromium: &Path, driver_port: u16) -> Client {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1200,1600", format!("--user-data-dir={}", tempfile::tempdir().expect("profile").keep().display())]
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut b = ClientBuilder::rustls().expect("tls");
        b.capabilities(caps.as_object().cloned().expect("object"));
        match b.connect(&format!("http://127.0.0.1:{driver_port}")).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a chromium session: {e}"),
        }
    }
}

/// `telejob serve` on a free port with `args` and `env`: the process, its base URL and the admin
/// token.
fn serve(
    data: &Path,
    args: &[&str],
    env: Vec<(&'static str, String)>,
) -> (telejob_e2e::Server, String, String) {
    let srv = telejob_e2e::ServeCommand::new(telejob_bin!(), data)
        .args(args)
        .envs(env)
        .start();
    let (base, admin) = (srv.base.clone(), srv.token.clone());
    (srv, base, admin)
}

/// chromedriver on a free port, and a headless chromium session through it.
async fn start_browser(chromium: &Path, driver: &Path) -> (Kill, Client) {
    let port = free_port();
    let driver = Kill(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver"),
    );
    (driver, browser(chromium, port).await)
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    type_into(c, "token", token).await;
    click_css(c, "button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("header .who"))
        .await
        .expect("signed in");
}

/// The element with id `id`, once it is there.
async fn element(c: &Client, id: &str) -> fantoccini::elements::Element {
    c.wait().for_element(Locator::Id(id)).await.expect(id)
}

/// Types `text` into the field with id `id` (a file input takes a path).
async fn type_into(c: &Client, id: &str, text: &str) {
    element(c, id).await.send_keys(text).await.expect("type");
}

/// Replaces the content of the field with id `id`.
async fn set_field(c: &Client, id: &str, text: &str) {
    element(c, id).await.clear().await.expect("clear");
    type_into(c, id, text).await;
}

/// Clicks the element with id `id`.
async fn click(c: &Client, id: &str) {
    element(c, id).await.click().await.expect("click");
}

/// The value of the form field with id `id`.
async fn value(c: &Client, id: &str) -> Option<String> {
    element(c, id).await.prop("value").await.expect("value")
}

/// How many elements match `css` now.
async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.expect(css).len()
}

/// Asserts that `text` holds every one of `parts`.
#[track_caller]
fn assert_holds(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "{p:?} in {text:?}");
    }
}

/// Whether the element with id `id` is shown.
async fn shown(c: &Client, id: &str) -> bool {
    element(c, id).await.is_displayed().await.expect("shown?")
}

/// Clicks the element `css` (an option of a select, a button of a row).
async fn click_css(c: &Client, css: &str) {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect("click");
}

/// The text of the element `css`, waiting for it to appear (pages load after clicks). A page
/// that navigates between finding the element and reading it leaves a stale element: read again.
async fn text(c: &Client, css: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let element = c.wait().for_element(Locator::Css(css)).await.expect(css);
        match element.text().await {
            Ok(text) => return text,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("text of {css}: {e}"),
        }
    }
}

/// How many pixels of a PNG screenshot are (about) `rgb`.
fn count_pixels(png_bytes: &[u8], rgb: [u8; 3]) -> usize {
    let mut d = png::Decoder::new(std::io::Cursor::new(png_bytes));
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info().expect("png");
    // At most 4 bytes a pixel once expanded to 8-bit RGBA.
    let (w, h) = (r.info().width as usize, r.info().height as usize);
    let mut buf = vec![0; w * h * 4];
    let info = r.next_frame(&mut buf).expect("frame");
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p.len() >= 3 && (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 8))
        .count()
}

#[tokio::test]
async fn a_user_schedules_and_runs_a_job_from_the_form() {
    let Some((chromium, driver)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (_srv, base, admin) = serve(&data, &[], Vec::new());
    let (_driver, c) = start_browser(&chromium, &driver).await;
    let code = write_script_tarball(
        dir.path().join("job.tar.gz"),
        "mkdir -p output; echo from-the-browser; echo 1,2 > output/result.csv",
    );

    sign_in(&c, &base, &admin).await;
    c.goto(&format!("{base}/jobs/new")).await.expect("form");
    // Defaults of the original form.
    assert_eq!(value(&c, "command").await.as_deref(), Some("./run.sh"));
    assert_eq!(value(&c, "output_dir").await.as_deref(), Some("output"));
    assert_eq!(value(&c, "timeout_minutes").await.as_deref(), Some("120"));
    // The advanced settings are folded; a local server has no EC2 field; an empty limit says
    // what the server gives.
    let advanced = c.find(Locator::Id("advanced")).await.expect("advanced");
    assert_eq!(advanced.attr("open").await.expect("open"), None, "folded");
    assert!(!shown(&c, "limit_memory").await);
    assert!(
        c.find(Locator::Id("instance_type")).await.is_err(),
        "no EC2 field here"
    );
    let processes = element(&c, "limit_processes").await;
    let placeholder = processes.attr("placeholder").await.expect("placeholder");
    assert_eq!(
        placeholder.as_deref(),
        Some("4096"),
        "the server's default processes limit"
    );
    // Fields that do not apply are hidden; choosing weekly shows the day.
    assert!(!shown(&c, "field-day_of_week").await);
    click_css(&c, "#frequency option[value=weekly]").await;
    assert!(shown(&c, "field-day_of_week").await);
    c.wait()
        .for_element(Locator::XPath(
            "//span[@id='preview'][contains(., 'weekly on monday')]",
        ))
        .await
        .expect("the preview follows the form");
    std::fs::write(
        artifacts().join("schedule-a-job-form.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");

    // A bad name: the error stands next to the field and what was typed is kept.
    type_into(&c, "name", "Not Valid").await;
    set_field(&c, "command", "bash run.sh").await;
    type_into(&c, "code", code.to_str().expect("utf8")).await;
    click(&c, "submit").await;
    let err = text(&c, "#error-name").await;
    assert!(err.contains("not a job name"), "{err}");
    assert_eq!(value(&c, "name").await.as_deref(), Some("Not Valid"));
    assert_eq!(value(&c, "command").await.as_deref(), Some("bash run.sh"));
    assert_eq!(value(&c, "frequency").await.as_deref(), Some("weekly"));

    // Fixed: scheduled, and the page says what will happen.
    set_field(&c, "name", "browserjob").await;
    type_into(&c, "code", code.to_str().expect("utf8")).await;
    click(&c, "submit").await;
    let what = text(&c, "#what-happens").await;
    assert_holds(
        &what,
        &[
            "weekly on monday at 12:00 UTC",
            "120 minutes",
            "browserjob/data/",
        ],
    );

    // Run it now and watch it succeed with its file listed.
    c.find(Locator::Id("run-now"))
        .await
        .expect("run now")
        .click()
        .await
        .expect("click");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = text(&c, "#run-state").await;
        if state == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline && !["failed", "timed_out"].contains(&state.as_str()),
            "run state {state}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.refresh().await.expect("reload");
    }
    assert!(text(&c, "#published").await.contains("result.csv"));
    assert!(text(&c, "#log").await.contains("from-the-browser"));
    let run_url = c.current_url().await.expect("url").to_string();
    std::fs::write(
        artifacts().join("run-page.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");

    // Replay it from its page: a new run of the same code and slot, that says what it replays.
    assert!(
        text(&c, "#run-spec-sha").await.len() == 64,
        "the spec hash is shown"
    );
    click(&c, "replay").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = c.current_url().await.expect("url").to_string();
        let state = text(&c, "#run-state").await;
        if url != run_url && state == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "replay state {state} at {url}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.refresh().await.expect("reload");
    }
    let page = text(&c, "main").await;
    let first_id = run_url.rsplit('/').next().expect("id");
    assert!(
        page.contains(&format!("A replay of run {first_id}")),
        "{page}"
    );
    assert!(text(&c, "#published").await.contains("result.csv"));

    // Edit it: the form comes back filled in; the change shows on the job page.
    c.goto(&format!("{base}/jobs/browserjob/edit"))
        .await
        .expect("edit page");
    assert_eq!(value(&c, "frequency").await.as_deref(), Some("weekly"));
    let t = c
        .find(Locator::Id("timeout_minutes"))
        .await
        .expect("timeout");
    t.clear().await.expect("clear");
    t.send_keys("175").await.expect("type");
    click(&c, "submit").await;
    element(&c, "runs").await;
    assert!(c.source().await.expect("source").contains("175 minutes"));
    // The job page draws the last runs' durations: one bar per run, coloured by outcome, on a
    // labelled time axis; the timeout (175 min, far above runs of seconds) is marked off the
    // scale rather than drawn at its top; the picture is what Chromium shows.
    c.goto(&format!("{base}/jobs/browserjob"))
        .await
        .expect("job page");
    let chart = c
        .find(Locator::Id("duration-chart"))
        .await
        .expect("the chart");
    let bars = count(&c, "#duration-chart rect.bar[data-state=succeeded]").await;
    assert_eq!(bars, 2, "the run and its replay");
    let off = c
        .find(Locator::Id("timeout-off-scale"))
        .await
        .expect("the timeout is marked off the scale");
    assert_eq!(
        off.attr("data-seconds").await.ok().flatten().as_deref(),
        Some("10500")
    );
    assert!(off.text().await.expect("text").contains("2 h 55 min"));
    assert!(
        c.find(Locator::Id("timeout-line")).await.is_err(),
        "no line at a false height"
    );
    let mut ticks = Vec::new();
    for t in c
        .find_all(Locator::Css("#duration-chart text.axis-label"))
        .await
        .expect("axis labels")
    {
        let secs: f64 = t
            .attr("data-seconds")
            .await
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .expect("a value");
        ticks.push((secs, t.text().await.expect("label")));
    }
    assert!(
        ticks.len() >= 2 && ticks[0] == (0.0, "0 s".to_string()),
        "{ticks:?}"
    );
    assert!(
        ticks.windows(2).all(|w| w[1].0 > w[0].0),
        "rising: {ticks:?}"
    );
    let png = chart.screenshot().await.expect("chart screenshot");
    std::fs::write(artifacts().join("duration-chart.png"), &png).expect("save");
    let green = count_pixels(&png, [0x2e, 0x7d, 0x32]);
    let red = count_pixels(&png, [0xc6, 0x28, 0x28]);
    assert!(
        green > 50,
        "succeeded bars are drawn green ({green} pixels)"
    );
    assert!(red > 10, "the timeout marker is drawn red ({red} pixels)");

    // The backfill list: the weekly slots of the last two weeks, never run, ticked; "Run these"
    // runs them, each for its own slot.
    c.goto(&format!(
        "{base}/jobs/browserjob/backfill?from={}&to={}",
        days_ago(14),
        days_ago(1)
    ))
    .await
    .expect("backfill page");
    let rows = text(&c, "#backfill-slots").await;
    assert!(
        rows.contains("missed") && rows.contains("12:00 UTC"),
        "{rows}"
    );
    let slots = count(&c, "#backfill-slots tr.slot").await;
    assert!(
        (2..=3).contains(&slots),
        "two weeks hold two or three mondays: {rows}"
    );
    std::fs::write(
        artifacts().join("backfill-list.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");
    click(&c, "run-these").await;
    element(&c, "runs").await;
    let runs = text(&c, "#runs").await;
    assert_eq!(
        runs.matches("backfill").count(),
        slots,
        "one backfill run per slot: {runs}"
    );

    // Warnings under the form, live: every minute is more than 24 runs a day.
    c.goto(&format!("{base}/jobs/new")).await.expect("form");
    click_css(&c, "#frequency option[value=cron]").await;
    set_field(&c, "cron", "* * * * *").await;
    let w = c
        .wait()
        .for_element(Locator::XPath(
            "//ul[@id='warnings']/li[contains(., 'more than 24')]",
        ))
        .await
        .expect("the warning shows while the form is filled")
        .text()
        .await
        .expect("text");
    assert!(w.contains("1440 times a day"), "{w}");
    std::fs::write(
        artifacts().join("form-warnings.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");

    // The job list: schedule in words, last run state.
    c.goto(&base).await.expect("list");
    let list = text(&c, "main table").await;
    assert!(
        list.contains("browserjob")
            && list.contains("weekly on monday at 12:00 UTC")
            && list.contains("succeeded"),
        "{list}"
    );

    // A second user sees the run of this public job, but not its log.
    let o = Command::new(telejob_bin!())
        .args(["token", "create", "--user", "bob", "--data-dir"])
        .arg(&data)
        .output()
        .expect("token");
    let bob = String::from_utf8_lossy(&o.stdout).trim().to_string();
    c.delete_all_cookies().await.expect("sign out");
    sign_in(&c, &base, &bob).await;
    c.goto(&run_url).await.expect("run page");
    assert!(
        c.find(Locator::Id("no-log")).await.is_ok(),
        "bob is told the log is for owners"
    );
    assert!(
        c.find(Locator::Id("log")).await.is_err(),
        "bob must not see the log"
    );
    assert!(
        !c.source()
            .await
            .expect("source")
            .contains("from-the-browser")
    );
    c.close().await.expect("close");
}

// EC2 workers: only in a binary built with the `ec2` feature (as .ci/run builds it).
#[cfg(feature = "ec2")]
#[tokio::test]
async fn a_user_launches_a_worker_from_the_form_and_terminates_it() {
    let Some((chromium, driver)) = tools() else {
        return;
    };
    let Some(moto) = telejob_aws::testing::Moto::start() else {
        eprintln!("skipped: the local AWS endpoint (moto) is not installed");
        return;
    };
    moto.create_buckets(&["pub", "priv"]);
    let ami = moto
        .boto3("print(ec2.describe_images()['Images'][0]['ImageId'])")
        .trim()
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("ec2.toml");
    std::fs::write(
        &cfg,
        format!(
            "compute = \"ec2\"\nworker_check_seconds = 1\npublic_store = \"s3://pub/\"\nprivate_store = \"s3://priv/telejob/\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint = \"{}\"\n[ec2]\nami = \"{ami}\"\ninstance_type = \"t3.micro\"\n\
             allowed_instance_types = [\"t3.micro\", \"t3.small\"]\nrun_role = \"{}\"\n",
            moto.endpoint(),
            moto.run_role()
        ),
    )
    .expect("config");
    let (_srv, base, admin) = serve(
        &data,
        &["--config", cfg.to_str().expect("utf8")],
        moto.env(),
    );
    let (_driver, c) = start_browser(&chromium, &driver).await;
    sign_in(&c, &base, &admin).await;
    c.goto(&format!("{base}/workers"))
        .await
        .expect("workers page");
    // A private key is refused next to its field, and not shown again.
    set_field(&c, "name", "browser-dev").await;
    type_into(
        &c,
        "ssh_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END OPENSSH PRIVATE KEY-----",
    )
    .await;
    click(&c, "launch").await;
    let err = text(&c, "#error-ssh_key").await;
    assert!(err.contains("private key"), "{err}");
    assert!(!c.source().await.expect("source").contains("b3BlbnNzaC1"));
    assert_eq!(value(&c, "name").await.as_deref(), Some("browser-dev"));
    // The public key from its .pub file (read into the field by the page's script).
    let pubfile = dir.path().join("id_ed25519.pub");
    std::fs::write(
        &pubfile,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti me@laptop\n",
    )
    .expect("key");
    type_into(&c, "ssh_key_file", pubfile.to_str().expect("utf8")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !value(&c, "ssh_key")
        .await
        .is_some_and(|v| v.starts_with("ssh-ed25519"))
    {
        assert!(Instant::now() < deadline, "the key file was not read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_field(&c, "lifetime", "2h").await;
    click_css(&c, "#instance_type option[value='t3.small']").await;
    click(&c, "launch").await;
    // In "My workers", running, with its ssh line.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = text(&c, "#workers tr.worker[data-name='browser-dev']").await;
        if row.contains("running") {
            break;
        }
        assert!(Instant::now() < deadline, "{row}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.refresh().await.expect("reload");
    }
    let ssh = c
        .find(Locator::Css(
            "#workers tr.worker[data-name='browser-dev'] input.ssh",
        ))
        .await
        .expect("ssh line")
        .prop("value")
        .await
        .expect("value")
        .unwrap_or_default();
    assert!(ssh.starts_with("ssh analyst@"), "{ssh}");
    std::fs::write(
        artifacts().join("workers-page.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");
    let instance = moto.boto3(
        "r = ec2.describe_instances(Filters=[{'Name': 'tag:telejob:worker', 'Values': ['browser-dev']}])\n\
         i = r['Reservations'][0]['Instances'][0]\nprint(i['InstanceId'], i['InstanceType'])",
    );
    let mut parts = instance.split_whitespace();
    let (id, kind) = (
        parts.next().expect("id").to_string(),
        parts.next().expect("type").to_string(),
    );
    assert_eq!(kind, "t3.small");
    // Terminate, confirmed in the page's dialog.
    click_css(
        &c,
        "#workers tr.worker[data-name='browser-dev'] button.terminate",
    )
    .await;
    c.accept_alert().await.expect("confirm");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = text(&c, "#workers tr.worker[data-name='browser-dev']").await;
        if row.contains("ended") {
            assert!(row.contains("terminated by admin"), "{row}");
            break;
        }
        assert!(Instant::now() < deadline, "{row}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.refresh().await.expect("reload");
    }
    let state = moto.boto3(&format!(
        "print(ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]['State']['Name'])"
    ));
    assert!(
        ["terminated", "shutting-down"].contains(&state.trim()),
        "{state}"
    );
    c.close().await.expect("close");
}

/// Waits (without reloading the page, at most `seconds`) until the text of `css` satisfies `ok`.
async fn until_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool, seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let t = text(c, css).await;
        if ok(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "{css}: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_dashboard_shows_every_setting_rolls_back_code_and_follows_a_run_live() {
    let Some((chromium, driver)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (srv, base, admin) = serve(&dir.path().join("data"), &[], Vec::new());
    let api = srv.admin();
    let script = "for i in 1 2 3; do echo \"tick $i\"; sleep 1; done; sleep 3; echo done; \
                  mkdir -p output; echo 1 > output/r.csv";
    api.create_with_script(
        serde_json::json!({"name": "live", "env": {"REGION": "eu"}, "secrets": {"API_KEY": "k-1"},
            "limits": {"memory": "1GiB", "processes": 64}, "overlap": "allow", "missed": "skip",
            "max_retries": 2, "maintainers": ["bob"]}),
        script,
    )
    .await;
    let (_, first) = api.get("/api/jobs/live").await;
    let first_sha = first["code_sha256"].as_str().expect("sha").to_string();
    let (status, _) = api
        .put_code("live", tarball(&[("run.sh", "echo second version", 0o755)]))
        .await;
    assert_eq!(status, 200);
    let (_driver, c) = start_browser(&chromium, &driver).await;
    sign_in(&c, &base, &admin).await;
    c.goto(&format!("{base}/jobs/live"))
        .await
        .expect("job page");
    // Every setting is on the page: env values, secret names (never values), limits, policies.
    assert!(text(&c, "#settings-env").await.contains("REGION=eu"));
    let secrets = text(&c, "#settings-secrets").await;
    assert!(
        secrets.contains("API_KEY") && !secrets.contains("k-1"),
        "{secrets}"
    );
    let limits = text(&c, "#settings-limits").await;
    assert!(
        limits.contains("memory 1 GiB") && limits.contains("processes 64"),
        "{limits}"
    );
    let policies = text(&c, "#settings-policies").await;
    assert_holds(
        &policies,
        &["overlap allow", "missed slots skip", "retries 2"],
    );
    assert!(text(&c, "#settings").await.contains("bob"));
    // Rollback: the older version made current again.
    let marked = count(&c, "#code-versions tr .current-marker").await;
    assert_eq!(marked, 1, "one current version");
    let current = text(&c, "#code-versions tr.current").await;
    assert!(
        !current.contains(&first_sha),
        "the upload is current: {current}"
    );
    c.find(Locator::Css(&format!(
        "#code-versions form:has(input[value='{first_sha}']) button.make-current"
    )))
    .await
    .expect("make current")
    .click()
    .await
    .expect("click");
    element(&c, "code-versions").await;
    let current = text(&c, "#code-versions tr.current").await;
    assert!(current.contains(&first_sha), "rolled back: {current}");
    let (_, now) = api.get("/api/jobs/live").await;
    assert_eq!(now["code_sha256"], first_sha.as_str());
    // A run's page streams its log as it prints and shows its end, without a reload.
    let id = api.start_run("live").await;
    c.goto(&format!("{base}/runs/{id}"))
        .await
        .expect("run page");
    until_text(&c, "#log", |t| t.contains("tick 1"), 30).await;
    let state = text(&c, "#run-state").await;
    assert_eq!(state, "running", "the first lines come while it runs");
    until_text(&c, "#run-state", |t| t == "succeeded", 30).await;
    assert!(text(&c, "#log").await.contains("done"));
    until_text(&c, "#run-published", |t| t.contains("r.csv"), 5).await;
    // Cancel, from the page of a run in flight.
    api.create_runnable(serde_json::json!({"name": "sleepy", "command": "sleep 300"}))
        .await;
    let id = api.start_run("sleepy").await;
    c.goto(&format!("{base}/runs/{id}"))
        .await
        .expect("run page");
    until_text(&c, "#run-state", |t| t == "running", 30).await;
    click(&c, "cancel").await;
    c.accept_alert().await.expect("confirm");
    until_text(&c, "#run-state", |t| t == "cancelled", 30).await;
    // Signed out, the published data is there to browse.
    c.goto(&format!("{base}/logout")).await.ok();
    c.delete_all_cookies().await.expect("sign out");
    c.goto(&format!("{base}/public/"))
        .await
        .expect("public index");
    assert!(text(&c, "body").await.contains("live"));
    c.goto(&format!("{base}/public/live/data/"))
        .await
        .expect("listing");
    let listing = text(&c, "body").await;
    assert!(listing.contains("r.csv"), "{listing}");
    c.goto(&format!("{base}/public/live/latest/manifest.json"))
        .await
        .expect("manifest");
    assert!(text(&c, "body").await.contains("r.csv"));
}
