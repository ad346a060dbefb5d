//! NginxProcess against real nginx: start, attach by pid file, stop, and stop on drop.

mod support;

use std::time::Duration;

use ion_lb::{marker, NginxProcess};

const WHAT: &str = "nginx process lifecycle";

#[tokio::test]
async fn start_attach_stop_and_drop_leave_no_master_running() {
    let dir = tempfile::tempdir().unwrap();
    let Some(b) = support::builder(&dir, WHAT) else {
        return;
    };
    let config = b.build().unwrap();
    let mut owned = NginxProcess::start(&config).await.expect("start nginx");
    assert!(owned.is_owned() && owned.is_running());
    let pid = owned.pid().unwrap();
    assert!(!owned.accepting_workers().unwrap().is_empty());

    // Attaching finds the same master and never stops it.
    let attached = NginxProcess::attach(&config).expect("attach by pid file");
    assert_eq!(attached.pid().unwrap(), pid);
    assert!(!attached.is_owned());
    attached.stop().await.unwrap();
    assert!(
        owned.is_running(),
        "stopping an attached master must not stop it"
    );

    owned.stop().await.expect("graceful stop");
    assert!(
        marker::read_marker(config.marker_listen, Duration::from_millis(500))
            .await
            .is_err()
    );
    assert!(
        NginxProcess::attach(&config).is_err() || rustix::process::test_kill_process(pid).is_err()
    );

    // Dropping an owned master stops it too.
    let dropped = NginxProcess::start(&config).await.expect("start again");
    let pid = dropped.pid().unwrap();
    drop(dropped);
    assert!(
        rustix::process::test_kill_process(pid).is_err(),
        "master {pid:?} outlived its handle"
    );
}
