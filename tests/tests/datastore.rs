//! The etcd client against a real etcd: reads, writes and transactions as etcd answers them,
//! failover between the members of a cluster (killed, stopped), the request log, TLS with client
//! certificates, authentication, and the checks of the TLS files before any connection.

use std::time::{Duration, Instant};

use common::config::EtcdSettings;
use common::datastore::{Condition, Datastore, Entry, HEDGE_DELAY, Read, Txn, Write};
use common::error::codes;
use common::{Code, Kind};
use tests::pki::{TlsFiles, write_loopback_identity};
use tests::{Etcd, Netns, TempDir};

/// Settings for the given endpoints, no TLS or credentials, a 5 s time budget.
fn settings_for(endpoints: Vec<String>) -> EtcdSettings {
    EtcdSettings::plain(endpoints, Duration::from_secs(5))
}

/// Settings for every member of `etcd`, with its CA and client identity when it uses TLS.
fn settings_of(etcd: &Etcd) -> EtcdSettings {
    let mut settings = settings_for(etcd.endpoints());
    if let Some(files) = etcd.tls_files() {
        settings.ca_cert_file = Some(files.ca.clone());
        settings.cert_file = Some(files.cert.clone());
        settings.key_file = Some(files.key.clone());
    }
    settings
}

/// A loopback URL nothing listens on.
fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", tests::etcd::free_port())
}

#[test]
#[ignore = "root: real etcd"]
fn get_put_list_delete_round_trip() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let ds = Datastore::connect(&settings_of(&etcd)).unwrap();
    assert_eq!(ds.get("/calico/v1/Ready").unwrap(), None);
    ds.put("/calico/v1/Ready", b"true").unwrap();
    ds.put("/calico/t/a/1", b"one").unwrap();
    ds.put("/calico/t/a/2", b"two").unwrap();
    ds.put("/calico/t/b", b"other").unwrap();

    let ready = ds.get("/calico/v1/Ready").unwrap().unwrap();
    assert_eq!(
        (ready.key.as_str(), ready.value.as_slice()),
        ("/calico/v1/Ready", &b"true"[..])
    );
    assert_eq!(ready.create_revision, ready.mod_revision);

    let listed = ds.list("/calico/t/a/").unwrap();
    let pairs: Vec<(&str, &[u8])> = listed
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("/calico/t/a/1", &b"one"[..]),
            ("/calico/t/a/2", &b"two"[..])
        ]
    );
    assert_eq!(
        ds.list_keys("/calico/t/").unwrap(),
        ["/calico/t/a/1", "/calico/t/a/2", "/calico/t/b"]
    );

    ds.put("/calico/t/a/1", b"uno").unwrap();
    let updated = ds.get("/calico/t/a/1").unwrap().unwrap();
    assert!(updated.mod_revision > updated.create_revision);

    assert!(ds.delete("/calico/t/a/1").unwrap());
    assert!(!ds.delete("/calico/t/a/1").unwrap());
    assert_eq!(ds.get("/calico/t/a/1").unwrap(), None);
    assert_eq!(ds.list("/calico/none/").unwrap(), []);
    assert_eq!(ds.requests_made(), 14);
}

#[test]
#[ignore = "root: real etcd"]
fn paged_listing_reads_every_key_once_at_the_first_page_revision() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let ds = Datastore::connect(&settings_of(&etcd)).unwrap();
    for i in 0..7 {
        ds.put(&format!("/calico/t/p/{i}"), b"v").unwrap();
    }
    ds.put("/calico/t/p0", b"outside").unwrap();
    ds.put("/calico/t/q", b"outside").unwrap();
    let before = ds.requests_made();
    let keys: Vec<String> = ds
        .list_paged("/calico/t/p/", 3)
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let want: Vec<String> = (0..7).map(|i| format!("/calico/t/p/{i}")).collect();
    assert_eq!(keys, want);
    assert_eq!(ds.requests_made() - before, 3);
    assert_eq!(ds.list_paged("/calico/none/", 3).unwrap(), []);
}

#[test]
#[ignore = "root: real etcd"]
fn txn_commits_when_conditions_hold_and_returns_current_on_conflict() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let ds = Datastore::connect(&settings_of(&etcd)).unwrap();
    let block = "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26";
    let handle = "/calico/ipam/v2/handle/h1";

    // Create-if-absent of two keys at once.
    let create = Txn {
        conditions: vec![
            Condition::Absent(block.into()),
            Condition::Absent(handle.into()),
        ],
        writes: vec![
            Write::Put(block.into(), b"v1".to_vec()),
            Write::Put(handle.into(), b"h".to_vec()),
        ],
        reads_on_failure: vec![block.into(), handle.into()],
    };
    let outcome = ds.txn(&create).unwrap();
    assert!(outcome.committed && outcome.current.is_empty() && !outcome.resent);
    assert!(outcome.revision > 0, "the commit's revision is known");

    // The same create again fails and returns both current values.
    let outcome = ds.txn(&create).unwrap();
    assert!(!outcome.committed);
    let values: Vec<(&str, &[u8])> = outcome
        .current
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice()))
        .collect();
    assert_eq!(values, [(block, &b"v1"[..]), (handle, &b"h"[..])]);
    let revision = outcome.current[0].mod_revision;

    // CAS on the revision read succeeds once; the stale one then conflicts.
    let cas = |value: &[u8]| Txn {
        conditions: vec![Condition::Revision(block.into(), revision)],
        writes: vec![
            Write::Put(block.into(), value.to_vec()),
            Write::Delete(handle.into()),
        ],
        reads_on_failure: vec![block.into()],
    };
    assert!(ds.txn(&cas(b"v2")).unwrap().committed);
    assert_eq!(ds.get(handle).unwrap(), None);
    let stale = ds.txn(&cas(b"v3")).unwrap();
    assert!(!stale.committed);
    assert_eq!(stale.current.len(), 1);
    assert_eq!(stale.current[0].value, b"v2");
    assert!(stale.current[0].mod_revision > revision);
    assert_eq!(ds.get(block).unwrap().unwrap().value, b"v2");

    // A missing key read on failure has no entry.
    let missing = Txn {
        conditions: vec![Condition::Revision("/calico/t/missing".into(), 1)],
        writes: vec![Write::Put("/calico/t/missing".into(), b"x".to_vec())],
        reads_on_failure: vec!["/calico/t/missing".into()],
    };
    let outcome = ds.txn(&missing).unwrap();
    assert!(!outcome.committed && outcome.current.is_empty() && !outcome.resent);
}

/// Keys and values of entries, for comparing answers.
fn pairs(entries: &[Entry]) -> Vec<(&str, &[u8])> {
    entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice()))
        .collect()
}

#[test]
#[ignore = "root: real etcd"]
fn read_answers_keys_and_prefixes_in_request_order_in_one_request() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let dir = TempDir::new("etcd-request-log");
    let log = dir.join("requests");
    let ds = Datastore::connect_with_request_log(&settings_of(&etcd), Some(log.clone())).unwrap();
    ds.put("/calico/t/a/1", b"one").unwrap();
    ds.put("/calico/t/a/2", b"two").unwrap();
    ds.put("/calico/t/b", b"other").unwrap();
    let before = ds.requests_made();

    let answers = ds
        .read(&[
            Read::Key("/calico/t/b".into()),
            Read::Prefix("/calico/t/a/".into()),
            Read::Key("/calico/t/missing".into()),
            Read::Prefix("/calico/t/none/".into()),
            Read::Key("/calico/t/a/1".into()),
        ])
        .unwrap();
    let answers: Vec<Vec<(&str, &[u8])>> = answers.iter().map(|a| pairs(a)).collect();
    assert_eq!(
        answers,
        [
            vec![("/calico/t/b", &b"other"[..])],
            vec![
                ("/calico/t/a/1", &b"one"[..]),
                ("/calico/t/a/2", &b"two"[..])
            ],
            vec![],
            vec![],
            vec![("/calico/t/a/1", &b"one"[..])],
        ]
    );
    assert_eq!(ds.requests_made() - before, 1);
    assert_eq!(ds.read(&[]).unwrap(), Vec::<Vec<Entry>>::new());
    assert_eq!(ds.requests_made() - before, 1, "no reads, no request");

    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().last(), Some("read /calico/t/b"));
}

#[test]
#[ignore = "root: real etcd"]
fn if_absent_group_is_applied_only_when_its_key_is_absent() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let ds = Datastore::connect(&settings_of(&etcd)).unwrap();
    let endpoint = "/calico/v1/host/n/workload/k8s/p/endpoint/eth0";
    let profile = "/calico/v1/policy/profile/kns.default/rules";
    let with_profile = |endpoint_value: &[u8], profile_value: &[u8]| Txn {
        conditions: vec![],
        writes: vec![
            Write::Put(endpoint.into(), endpoint_value.to_vec()),
            Write::IfAbsent {
                key: profile.into(),
                writes: vec![Write::Put(profile.into(), profile_value.to_vec())],
            },
        ],
        reads_on_failure: vec![],
    };

    // Absent: the group is applied with the rest, in one request.
    assert!(ds.txn(&with_profile(b"ep1", b"rules1")).unwrap().committed);
    assert_eq!(ds.requests_made(), 1);
    let read = ds
        .read(&[Read::Key(endpoint.into()), Read::Key(profile.into())])
        .unwrap();
    assert_eq!(pairs(&read[0]), [(endpoint, &b"ep1"[..])]);
    assert_eq!(pairs(&read[1]), [(profile, &b"rules1"[..])]);

    // Present: the group is skipped, the rest still commits.
    let outcome = ds.txn(&with_profile(b"ep2", b"rules2")).unwrap();
    assert!(outcome.committed && outcome.current.is_empty() && !outcome.resent);
    assert_eq!(ds.requests_made(), 3);
    assert_eq!(ds.get(endpoint).unwrap().unwrap().value, b"ep2");
    assert_eq!(ds.get(profile).unwrap().unwrap().value, b"rules1");
}

#[test]
#[ignore = "root: real etcd"]
fn failed_outer_condition_writes_nothing_including_the_group() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let ds = Datastore::connect(&settings_of(&etcd)).unwrap();
    let endpoint = "/calico/v1/host/n/workload/k8s/p/endpoint/eth0";
    let profile = "/calico/v1/policy/profile/kns.default/rules";
    ds.put(endpoint, b"existing").unwrap();
    let create = Txn {
        conditions: vec![Condition::Absent(endpoint.into())],
        writes: vec![
            Write::Put(endpoint.into(), b"new".to_vec()),
            Write::IfAbsent {
                key: profile.into(),
                writes: vec![
                    Write::Put(profile.into(), b"rules".to_vec()),
                    Write::Put("/calico/t/labels".into(), b"l".to_vec()),
                ],
            },
        ],
        reads_on_failure: vec![endpoint.into()],
    };
    let outcome = ds.txn(&create).unwrap();
    assert!(!outcome.committed);
    assert_eq!(pairs(&outcome.current), [(endpoint, &b"existing"[..])]);
    let read = ds
        .read(&[
            Read::Key(endpoint.into()),
            Read::Key(profile.into()),
            Read::Key("/calico/t/labels".into()),
        ])
        .unwrap();
    assert_eq!(pairs(&read[0]), [(endpoint, &b"existing"[..])]);
    assert_eq!((read[1].len(), read[2].len()), (0, 0));
    assert_eq!(ds.requests_made(), 3);
}

#[test]
#[ignore = "root: real etcd"]
fn dead_first_endpoint_fails_over_to_live_ones() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let endpoints = vec![
        dead_endpoint(),
        etcd.endpoints()[0].clone(),
        dead_endpoint(),
    ];
    let ds = Datastore::connect(&settings_for(endpoints)).unwrap();
    ds.put("/calico/t/k", b"v").unwrap();
    assert_eq!(ds.requests_made(), 2, "one refused attempt, one answered");
    // The live endpoint is remembered: later requests go straight to it.
    assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"v");
    assert_eq!(ds.requests_made(), 3);
}

#[test]
#[ignore = "root: real etcd"]
fn killed_cluster_member_is_skipped() {
    let _host = Netns::host();
    let mut etcd = Etcd::start_cluster();
    // When the killed member led, the others elect a new leader first; on a busy machine that
    // has taken longer than the usual 5 s budget. What is tested is where requests go.
    let settings = EtcdSettings {
        timeout: Duration::from_secs(30),
        ..settings_of(&etcd)
    };
    let ds = Datastore::connect(&settings).unwrap();
    ds.put("/calico/t/k", b"before").unwrap();
    // The member in use dies: the next requests go to the others.
    etcd.kill_member(0);
    ds.put("/calico/t/k", b"after").unwrap();
    assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"after");
    let current = ds.get("/calico/t/k").unwrap().unwrap();
    let cas = Txn {
        conditions: vec![Condition::Revision(
            "/calico/t/k".into(),
            current.mod_revision,
        )],
        writes: vec![Write::Put("/calico/t/k".into(), b"cas".to_vec())],
        reads_on_failure: vec![],
    };
    assert!(ds.txn(&cas).unwrap().committed);
    // A fresh client whose first endpoint is the dead member works too.
    let fresh = Datastore::connect(&settings).unwrap();
    assert_eq!(fresh.get("/calico/t/k").unwrap().unwrap().value, b"cas");
}

#[test]
#[ignore = "root: real etcd"]
fn stopped_first_member_costs_a_read_the_hedge_delay_and_later_requests_nothing() {
    let _host = Netns::host();
    let mut etcd = Etcd::start_cluster();
    Datastore::connect(&settings_of(&etcd))
        .unwrap()
        .put("/calico/t/k", b"v")
        .unwrap();
    etcd.pause_member(0);
    let ds = Datastore::connect(&settings_of(&etcd)).unwrap();
    let started = Instant::now();
    assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"v");
    let first = started.elapsed();
    // The read waited the hedge delay for the stopped member, then went to the others (an
    // answer within the 5 s budget is the hedge's: the stopped member never answers).
    assert!(first >= HEDGE_DELAY, "{first:?}");
    // The member that answered is used from now on, for reads and writes.
    // Counted rather than timed: a read sent to the stopped member first would be a second
    // request, hedged to the others.
    let before = ds.requests_made();
    ds.put("/calico/t/k", b"w").unwrap();
    assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"w");
    assert_eq!(ds.requests_made() - before, 2);
    etcd.resume_member(0);
}

#[test]
#[ignore = "root: real etcd"]
fn two_stopped_members_cost_one_hedge_delay() {
    let _host = Netns::host();
    // Two stopped members of one cluster would take its quorum, so each stands alone.
    let mut stopped = [Etcd::start(), Etcd::start()];
    let live = Etcd::start();
    Datastore::connect(&settings_of(&live))
        .unwrap()
        .put("/calico/t/k", b"live")
        .unwrap();
    let mut endpoints: Vec<String> = stopped.iter().map(|s| s.endpoints()[0].clone()).collect();
    endpoints.push(live.endpoints()[0].clone());
    stopped.iter_mut().for_each(|s| s.pause_member(0));
    let ds = Datastore::connect(&settings_for(endpoints)).unwrap();
    let started = Instant::now();
    assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"live");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    stopped.iter_mut().for_each(|s| s.resume_member(0));
}

#[test]
#[ignore = "root: real etcd"]
fn write_to_a_member_stopped_mid_run_fails_over_and_applies_once() {
    let _host = Netns::host();
    let mut etcd = Etcd::start_cluster();
    let mut settings = settings_of(&etcd);
    settings.timeout = Duration::from_secs(3);
    let ds = Datastore::connect(&settings).unwrap();
    let create = Txn {
        conditions: vec![Condition::Absent("/calico/t/once".into())],
        writes: vec![Write::Put("/calico/t/once".into(), b"1".to_vec())],
        reads_on_failure: vec!["/calico/t/once".into()],
    };
    ds.get("/calico/t/warm-up").unwrap();
    // The member in use stops: the write waits its share of the budget (a third), then
    // goes to a member that answers.
    etcd.pause_member(0);
    let started = Instant::now();
    let outcome = ds.txn(&create).unwrap();
    let elapsed = started.elapsed();
    assert!(outcome.committed);
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    etcd.resume_member(0);
    // The stopped member never got the write applied twice: a second create conflicts.
    let fresh = Datastore::connect(&settings_of(&etcd)).unwrap();
    let again = fresh.txn(&create).unwrap();
    assert!(!again.committed);
    assert_eq!(pairs(&again.current), [("/calico/t/once", &b"1"[..])]);
}

#[test]
#[ignore = "root: real etcd"]
fn request_log_gets_one_line_per_request() {
    let _host = Netns::host();
    let etcd = Etcd::start();
    let dir = TempDir::new("etcd-request-log");
    let log = dir.join("requests");
    let ds = Datastore::connect_with_request_log(&settings_of(&etcd), Some(log.clone())).unwrap();
    ds.get("/calico/v1/Ready").unwrap();
    ds.list("/calico/v1/host/n/workload/").unwrap();
    ds.txn(&Txn {
        conditions: vec![Condition::Absent("/calico/t/a".into())],
        writes: vec![Write::Put("/calico/t/a".into(), b"1".to_vec())],
        reads_on_failure: vec![],
    })
    .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text,
        "get /calico/v1/Ready\nlist /calico/v1/host/n/workload/\ntxn /calico/t/a\n"
    );
    assert_eq!(ds.requests_made(), 3);
}

#[test]
#[ignore = "root: real etcd"]
fn tls_endpoint_is_used_with_ca_and_client_certificate() {
    let _host = Netns::host();
    let etcd = Etcd::start_tls();
    let settings = settings_of(&etcd);
    assert!(settings.endpoints[0].starts_with("https://"));
    let ds = Datastore::connect(&settings).unwrap();
    ds.put("/calico/t/tls", b"v").unwrap();
    assert_eq!(ds.get("/calico/t/tls").unwrap().unwrap().value, b"v");

    // Without a client certificate the server refuses the handshake. The client sees only a
    // closed connection, as from a member that went away, so it is "try again later" too.
    let without_identity = EtcdSettings {
        cert_file: None,
        key_file: None,
        timeout: Duration::from_secs(1),
        ..settings
    };
    let err = Datastore::connect(&without_identity)
        .unwrap()
        .get("/calico/t/tls")
        .unwrap_err();
    assert_eq!(err.code(), Code::TryAgainLater, "{err:?}");
    assert!(
        err.msg().contains(&settings_of(&etcd).endpoints[0]),
        "{err:?}"
    );
}

#[test]
#[ignore = "root: real etcd"]
fn credentials_authenticate_and_missing_ones_are_refused() {
    let _host = Netns::host();
    let mut etcd = Etcd::start();
    etcd.enable_auth("s3cret");
    let mut settings = settings_of(&etcd);
    settings.credentials = Some(("root".into(), "s3cret".into()));
    let ds = Datastore::connect(&settings).unwrap();
    ds.put("/calico/t/auth", b"v").unwrap();
    assert_eq!(ds.get("/calico/t/auth").unwrap().unwrap().value, b"v");
    assert_eq!(ds.requests_made(), 3, "authenticate, put, get");

    // Refusals are not transient: no failover, no try-again-later.
    settings.credentials = Some(("root".into(), "wrong".into()));
    let err = Datastore::connect(&settings)
        .unwrap()
        .get("/calico/t/auth")
        .unwrap_err();
    assert_eq!(
        (err.code(), err.kind()),
        (codes::DATASTORE, Kind::Other),
        "{err:?}"
    );
    settings.credentials = None;
    let err = Datastore::connect(&settings)
        .unwrap()
        .get("/calico/t/auth")
        .unwrap_err();
    assert_eq!(
        (err.code(), err.kind()),
        (codes::DATASTORE, Kind::Other),
        "{err:?}"
    );
    assert!(err.msg().contains("/calico/t/auth"), "{err:?}");
}

#[test]
fn broken_tls_files_are_invalid_config_naming_key_and_file() {
    let dir = TempDir::new("etcd-tls-files");
    let TlsFiles { ca, cert, key } = write_loopback_identity(dir.path());
    let other_key = dir.join("other.key");
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(&other_key, other).unwrap();
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap();
        dir.join(name)
    };
    let garbage = write("garbage.pem", "not PEM at all\n");
    let bad_der = write(
        "bad-der.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let unterminated = write("unterminated.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let zero = std::path::PathBuf::from("/dev/zero");
    type Files<'a> = [&'a std::path::Path; 3];
    // (CA, certificate, key), the key named, the file named, what is wrong
    let cases: [(Files, &str, &std::path::Path, &str); 9] = [
        (
            [&garbage, &cert, &key],
            "etcd_ca_cert_file",
            &garbage,
            "no PEM certificate",
        ),
        (
            [&key, &cert, &key],
            "etcd_ca_cert_file",
            &key,
            "no PEM certificate",
        ),
        (
            [&bad_der, &cert, &key],
            "etcd_ca_cert_file",
            &bad_der,
            "not a usable CA",
        ),
        (
            [&unterminated, &cert, &key],
            "etcd_ca_cert_file",
            &unterminated,
            "decode",
        ),
        (
            [&zero, &cert, &key],
            "etcd_ca_cert_file",
            &zero,
            "character device",
        ),
        (
            [&ca, &key, &key],
            "etcd_cert_file",
            &key,
            "no PEM certificate",
        ),
        (
            [&ca, &bad_der, &key],
            "etcd_cert_file",
            &bad_der,
            "not a usable certificate",
        ),
        (
            [&ca, &cert, &cert],
            "etcd_key_file",
            &cert,
            "no PEM private key",
        ),
        (
            [&ca, &cert, &other_key],
            "etcd_key_file",
            &other_key,
            "does not belong",
        ),
    ];
    for ([ca, cert, key], config_key, file, why) in cases {
        let mut settings = settings_for(vec!["https://127.0.0.1:1".into()]);
        settings.ca_cert_file = Some(ca.to_path_buf());
        settings.cert_file = Some(cert.to_path_buf());
        settings.key_file = Some(key.to_path_buf());
        let started = Instant::now();
        let err = Datastore::connect(&settings).err().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "{err:?}");
        assert_eq!(err.code(), Code::InvalidConfig, "{err:?}");
        let msg = err.msg();
        assert!(msg.contains(config_key), "{msg} should name {config_key}");
        assert!(
            msg.contains(&file.display().to_string()),
            "{msg} should name {file:?}"
        );
        assert!(msg.contains(why), "{msg} should say {why}");
    }
    // The files that belong together pass.
    let mut settings = settings_for(vec!["https://127.0.0.1:1".into()]);
    settings.ca_cert_file = Some(ca);
    settings.cert_file = Some(cert);
    settings.key_file = Some(key);
    assert!(Datastore::connect(&settings).is_ok());
}
