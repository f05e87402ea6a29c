//! Durability of the embedded store, on the real binary: kill -9 under concurrent writers loses
//! no acknowledged write and leaves no command half applied, a clean restart brings back
//! everything, recovery answers UNAVAILABLE "recovering" until it is done, a corrupt store
//! stops the server with a clear error, and a backup round-trips through `neurograph restore`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::{channel, runtime, wait_serving, Server, LIMIT};
use common::full_token;
use neurograph::api::pb;
use neurograph::api::pb::cdna_service_client::CdnaServiceClient;
use neurograph::api::pb::grid_service_client::GridServiceClient;
use neurograph::api::pb::system_client::SystemClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Every token, by id.
async fn all_tokens(addr: &str) -> BTreeMap<u32, pb::Token> {
    let mut client = TokenServiceClient::new(channel(addr).await);
    let tokens = common::list_all(&mut client).await;
    tokens.into_iter().map(|t| (t.id, t)).collect()
}

/// What a client can read of the whole state (quarantine time left aside: it runs on).
#[derive(Debug, PartialEq)]
struct Observed {
    tokens: BTreeMap<u32, pb::Token>,
    grids: Vec<pb::Grid>,
    grid_hits: Vec<Vec<pb::Neighbor>>,
    config: pb::CdnaConfig,
    history: Vec<pb::HistoryEntry>,
    quarantine: pb::QuarantineStatus,
}

async fn observe(addr: &str) -> Observed {
    let mut grids = GridServiceClient::new(channel(addr).await);
    let mut cdna = CdnaServiceClient::new(channel(addr).await);
    let listed = grids
        .list_grids(pb::ListGridsRequest {})
        .await
        .expect("list grids")
        .into_inner()
        .grids;
    let mut grid_hits = Vec::new();
    for grid in &listed {
        let hits = grids
            .range_query(pb::RangeQueryRequest {
                grid_id: grid.grid_id,
                space: pb::Space::L1Physical as i32,
                center: Some(pb::Point3::default()),
                radius: 1e6,
                limit: 100_000,
            })
            .await
            .expect("range query")
            .into_inner()
            .results;
        grid_hits.push(hits);
    }
    let history = cdna
        .get_history(pb::GetHistoryRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("history")
        .into_inner()
        .entries;
    let mut quarantine = cdna
        .get_quarantine_status(pb::GetQuarantineStatusRequest {})
        .await
        .expect("quarantine")
        .into_inner();
    quarantine.time_left_seconds = 0;
    Observed {
        tokens: all_tokens(addr).await,
        grids: listed,
        grid_hits,
        config: cdna
            .get_config(pb::GetConfigRequest {})
            .await
            .expect("config")
            .into_inner(),
        history,
        quarantine,
    }
}

/// A token at `x` in L1 (others as `full_token`), with an explicit id when `id` ≠ 0.
fn token(id: u32, x: f32) -> pb::Token {
    pb::Token {
        id,
        l1_physical: Some(pb::Point3 { x, y: 1.0, z: -1.0 }),
        ..full_token()
    }
}

/// Creates, updates, deletes, grids and CDNA changes: a bit of every kind of state.
async fn write_some_of_everything(addr: &str) {
    let mut tokens = TokenServiceClient::new(channel(addr).await);
    let mut grids = GridServiceClient::new(channel(addr).await);
    let mut cdna = CdnaServiceClient::new(channel(addr).await);
    let mut ids = Vec::new();
    for i in 0..20 {
        let created = tokens
            .create_token(pb::CreateTokenRequest {
                token: Some(token(0, i as f32)),
                ttl_seconds: 0,
            })
            .await
            .expect("create")
            .into_inner();
        ids.push(created.id);
    }
    tokens
        .batch_create_tokens(pb::BatchCreateTokensRequest {
            tokens: (0..5).map(|i| token(0x1200_0000 + 50 + i, 3.0)).collect(),
            ttl_seconds: 0,
        })
        .await
        .expect("batch");
    tokens
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id: ids[0],
                weight: 0.25,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["weight".into()],
            }),
        })
        .await
        .expect("update");
    tokens
        .delete_token(pb::DeleteTokenRequest { id: ids[1] })
        .await
        .expect("delete");
    let grid = grids
        .create_grid(pb::CreateGridRequest {
            config: Some(pb::GridConfig {
                density_threshold: Some(0.25),
                min_field_nodes: Some(2),
            }),
        })
        .await
        .expect("create grid")
        .into_inner();
    for id in &ids[2..8] {
        grids
            .add_token(pb::AddTokenRequest {
                grid_id: grid.grid_id,
                token_id: *id,
            })
            .await
            .expect("add member");
    }
    // A member deleted later leaves the grid; the deleted grid's memberships go with it.
    tokens
        .delete_token(pb::DeleteTokenRequest { id: ids[2] })
        .await
        .expect("delete member");
    let doomed = grids
        .create_grid(pb::CreateGridRequest { config: None })
        .await
        .expect("create grid")
        .into_inner();
    grids
        .add_token(pb::AddTokenRequest {
            grid_id: doomed.grid_id,
            token_id: ids[3],
        })
        .await
        .expect("add member");
    grids
        .delete_grid(pb::DeleteGridRequest {
            grid_id: doomed.grid_id,
        })
        .await
        .expect("delete grid");
    cdna.switch_profile(pb::SwitchProfileRequest {
        profile_id: "explorer".into(),
        expected_revision: None,
    })
    .await
    .expect("switch");
    cdna.update_config(pb::UpdateConfigRequest {
        config: Some(pb::CdnaConfig {
            min_token_weight: 0.1,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["min_token_weight".into()],
        }),
        expected_revision: None,
        validate: None,
    })
    .await
    .expect("update config");
    cdna.start_quarantine(pb::StartQuarantineRequest {
        duration_seconds: 3600,
    })
    .await
    .expect("start quarantine");
    // Churn of the running quarantine is state too.
    tokens
        .create_token(pb::CreateTokenRequest {
            token: Some(token(0, 7.0)),
            ttl_seconds: 0,
        })
        .await
        .expect("create during quarantine");
}

#[test]
fn clean_restart_keeps_tokens_counters_grids_and_cdna() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    let mut server = Server::start_on(dir.path(), &[]);
    let before = rt.block_on(async {
        wait_serving(&server.addr).await;
        write_some_of_everything(&server.addr).await;
        observe(&server.addr).await
    });
    assert_eq!(before.tokens.len(), 20 + 5 - 2 + 1);
    assert_eq!(before.grids.len(), 2, "grid 0 and the kept user grid");
    assert_eq!(before.config.profile, "explorer");
    assert!(before.quarantine.active);
    assert!(before.quarantine.token_churn >= 1);
    server.stop();

    let server = Server::start_on(dir.path(), &[]);
    rt.block_on(async {
        wait_serving(&server.addr).await;
        let after = observe(&server.addr).await;
        assert_eq!(after, before, "a clean restart brings back everything");
        // Counters survive: the next allocated id follows the highest ever used, deleted included.
        let mut tokens = TokenServiceClient::new(channel(&server.addr).await);
        let next = tokens
            .create_token(pb::CreateTokenRequest {
                token: Some(token(0, 1.0)),
                ttl_seconds: 0,
            })
            .await
            .expect("create after restart")
            .into_inner();
        let highest = before.tokens.keys().filter(|id| **id >> 24 == 0).max();
        assert_eq!(next.id, highest.expect("allocated ids") + 1);
        // Grid ids are never reused either: two were used before the restart.
        let mut grids = GridServiceClient::new(channel(&server.addr).await);
        let grid = grids
            .create_grid(pb::CreateGridRequest { config: None })
            .await
            .expect("create grid")
            .into_inner();
        assert_eq!(grid.grid_id, 3);
    });
}

/// What the writers of the crash test know: acknowledged state and every attempted batch.
#[derive(Default)]
struct Ledger {
    /// Acknowledged live tokens as the server returned them.
    live: HashMap<u32, pb::Token>,
    /// Acknowledged deletes.
    deleted: HashSet<u32>,
    /// Tokens whose delete was sent but not acknowledged: present with these values, or gone.
    in_doubt: HashMap<u32, pb::Token>,
    /// Explicit ids of every batch sent, acknowledged or not.
    batches: Vec<Vec<u32>>,
}

/// One writer: creates (explicit local ids from `base` in its own `pair`, and allocated ids in
/// pair + 0x20), batches and deletes until a call fails (the server was killed) or `stop` is set.
async fn writer(
    addr: String,
    pair: u32,
    base: u32,
    ledger: Arc<Mutex<Ledger>>,
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return;
    };
    let Ok(channel) = endpoint.connect().await else {
        return;
    };
    let mut client = TokenServiceClient::new(channel);
    let mut next_local = base;
    let mut mine: Vec<u32> = Vec::new();
    for step in 0u32.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let result = match step % 10 {
            0..=4 => {
                next_local += 1;
                let id = pair << 24 | next_local;
                client
                    .create_token(pb::CreateTokenRequest {
                        token: Some(token(id, step as f32)),
                        ttl_seconds: 0,
                    })
                    .await
                    .map(|r| vec![r.into_inner()])
            }
            5 | 6 => {
                let ids: Vec<u32> = (0..5).map(|i| pair << 24 | (next_local + 1 + i)).collect();
                next_local += 5;
                ledger.lock().expect("ledger").batches.push(ids.clone());
                client
                    .batch_create_tokens(pb::BatchCreateTokensRequest {
                        tokens: ids.iter().map(|id| token(*id, 2.0)).collect(),
                        ttl_seconds: 0,
                    })
                    .await
                    .map(|r| r.into_inner().tokens)
            }
            7 | 8 => client
                .create_token(pb::CreateTokenRequest {
                    token: Some(pb::Token {
                        domain: (pair + 0x20) >> 4,
                        entity_type: (pair + 0x20) & 0xF,
                        ..token(0, 5.0)
                    }),
                    ttl_seconds: 0,
                })
                .await
                .map(|r| vec![r.into_inner()]),
            _ => match mine.pop() {
                Some(id) => {
                    {
                        let mut ledger = ledger.lock().expect("ledger");
                        let token = ledger.live.remove(&id).expect("mine are live");
                        ledger.in_doubt.insert(id, token);
                    }
                    client
                        .delete_token(pb::DeleteTokenRequest { id })
                        .await
                        .map(|_| {
                            let mut ledger = ledger.lock().expect("ledger");
                            ledger.in_doubt.remove(&id);
                            ledger.deleted.insert(id);
                            Vec::new()
                        })
                }
                None => Ok(Vec::new()),
            },
        };
        match result {
            Ok(created) => {
                let mut ledger = ledger.lock().expect("ledger");
                for token in created {
                    mine.push(token.id);
                    ledger.live.insert(token.id, token);
                }
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => return,
        }
    }
}

/// Checks the restarted server against the ledger: every acknowledged write is there with
/// its acknowledged values, no acknowledged delete came back, every batch is all or nothing.
fn check_ledger(ledger: &Ledger, found: &BTreeMap<u32, pb::Token>) {
    for (id, token) in &ledger.live {
        assert_eq!(
            found.get(id),
            Some(token),
            "acknowledged token {id} lost or changed"
        );
    }
    for id in &ledger.deleted {
        assert!(
            !found.contains_key(id),
            "acknowledged delete of {id} undone"
        );
    }
    for (id, token) in &ledger.in_doubt {
        if let Some(present) = found.get(id) {
            assert_eq!(present, token, "token {id} changed by a delete");
        }
    }
    for batch in &ledger.batches {
        let present = batch.iter().filter(|id| found.contains_key(id)).count();
        let deleted = batch
            .iter()
            .filter(|id| ledger.deleted.contains(id) || ledger.in_doubt.contains_key(id))
            .count();
        assert!(
            present == 0 || present + deleted == batch.len(),
            "batch {batch:?} half applied: {present} of {} present",
            batch.len()
        );
    }
}

#[test]
fn kill_9_under_concurrent_writers_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // Two rounds: the second kills a server that recovered from the first kill.
    for round in 0..2u32 {
        let mut server = Server::start_on(dir.path(), &[]);
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = rt.block_on(async {
            wait_serving(&server.addr).await;
            let found = all_tokens(&server.addr).await;
            check_ledger(&ledger.lock().expect("ledger"), &found);
            (0..8u32)
                .map(|w| {
                    // Round r writes local ids from (r+1)·1M, so rounds never collide.
                    tokio::spawn(writer(
                        server.addr.clone(),
                        0x10 + w,
                        1_000_000 * (round + 1),
                        Arc::clone(&ledger),
                        Arc::clone(&acks),
                        Arc::clone(&stop),
                    ))
                })
                .collect::<Vec<_>>()
        });
        // Kill while the writers are busy: after some acknowledgements, mid-stream.
        let started = std::time::Instant::now();
        while acks.load(Ordering::SeqCst) < 300 {
            assert!(
                started.elapsed() < LIMIT,
                "writers made no progress\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = server.crash();
        assert!(!status.success());
        stop.store(true, Ordering::SeqCst);
        rt.block_on(async {
            for writer in writers {
                let _ = writer.await;
            }
        });
    }
    let server = Server::start_on(dir.path(), &[]);
    rt.block_on(async {
        wait_serving(&server.addr).await;
        let found = all_tokens(&server.addr).await;
        let ledger = ledger.lock().expect("ledger");
        assert!(
            ledger.live.len() >= 300,
            "the test acknowledged enough writes"
        );
        check_ledger(&ledger, &found);
    });
}

/// Writes `count` tokens with every space defined straight into a new store in `dir`.
fn write_store(dir: &Path, count: u32) {
    use neurograph::model::TokenInput;
    use neurograph::store::durable::recovery;
    use neurograph::store::durable::schema::{apply_writes, DurableWrite};
    let (db, _) = recovery::open(dir).expect("create a store");
    let txn = db.begin_write().expect("write");
    let writes: Vec<DurableWrite> = (1..=count)
        .map(|i| {
            let input = TokenInput::from(&pb::Token {
                id: i,
                ..token(0, (i % 1000) as f32 / 10.0)
            });
            let draft = input.to_draft().expect("valid");
            DurableWrite::PutToken(neurograph::model::Token {
                id: neurograph::model::TokenId::new(i).expect("id"),
                data: draft.stamped(1),
            })
        })
        .chain([DurableWrite::RaiseCounter {
            pair: neurograph::model::IdPair::default(),
            local_id: count,
        }])
        .collect();
    apply_writes(&txn, &writes).expect("writes");
    neurograph::store::durable::schema::put_sequence(&txn, 1).expect("sequence");
    txn.commit().expect("commit");
}

#[test]
fn recovery_answers_unavailable_until_the_store_is_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let count = 100_000;
    write_store(dir.path(), count);
    let rt = runtime();
    let server = Server::start_on(dir.path(), &[]);
    rt.block_on(async {
        let mut health = HealthClient::new(channel(&server.addr).await);
        let mut tokens = TokenServiceClient::new(channel(&server.addr).await);
        let mut system = SystemClient::new(channel(&server.addr).await);
        // Right after the port opens, the store is still being read back.
        let first = health
            .check(HealthCheckRequest::default())
            .await
            .expect("health answers during recovery")
            .into_inner()
            .status;
        assert_eq!(first, ServingStatus::NotServing as i32);
        let mut saw_recovering = false;
        loop {
            let serving = health
                .check(HealthCheckRequest::default())
                .await
                .expect("health")
                .into_inner()
                .status
                == ServingStatus::Serving as i32;
            match tokens
                .count_tokens(pb::CountTokensRequest { filter: None })
                .await
            {
                Ok(reply) => {
                    assert_eq!(reply.into_inner().count, u64::from(count), "all or nothing");
                    if serving {
                        break;
                    }
                }
                Err(status) => {
                    assert!(!serving, "SERVING but {status:?}");
                    assert_eq!(status.code(), tonic::Code::Unavailable);
                    assert!(status.message().contains("recovering"), "{status:?}");
                    let ready = system
                        .ready(pb::ReadyRequest {})
                        .await
                        .expect("System answers during recovery")
                        .into_inner();
                    // Recovery may have finished since the call above.
                    if !ready.ready {
                        assert_eq!(
                            ready.checks.get("token_store").map(String::as_str),
                            Some("starting")
                        );
                    }
                    saw_recovering = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            saw_recovering,
            "no call was answered UNAVAILABLE during recovery"
        );
        let status = system
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.storage_backend, "redb");
        assert_eq!(status.tokens.expect("tokens").total, u64::from(count));
    });
}

/// Runs `neurograph --data-dir DATA restore BACKUP` to completion.
fn run_restore(data: &Path, backup: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_neurograph"))
        .args([
            "--data-dir",
            data.to_str().expect("utf-8"),
            "restore",
            backup,
        ])
        .output()
        .expect("run restore")
}

fn assert_refuses_to_start(dir: &Path, expected: &str) {
    let mut server = Server::start_on(dir, &[]);
    let status = server
        .wait_exit(LIMIT)
        .expect("the server stops on its own");
    assert!(!status.success(), "{status:?}");
    let log = server.log();
    assert!(log.contains(expected), "expected {expected:?} in\n{log}");
    assert!(!log.contains("recovered; serving"), "{log}");
}

#[test]
fn a_corrupt_store_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("neurograph.redb");
    std::fs::write(&file, vec![0x5a; 64 * 1024]).expect("write garbage");
    assert_refuses_to_start(dir.path(), "is corrupt or not a NeuroGraph store");
    assert_eq!(
        std::fs::read(&file).expect("still there").len(),
        64 * 1024,
        "left as it was"
    );

    std::fs::write(&file, b"").expect("truncate");
    assert_refuses_to_start(dir.path(), "the file is empty");
}

#[test]
fn an_unusable_data_directory_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    assert_refuses_to_start(&not_a_dir, "data directory");
}

#[test]
fn a_backup_restores_the_state_it_was_taken_at() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let rt = runtime();
    let mut server = Server::start_on(&data, &["--backup-dir", backups.to_str().expect("utf-8")]);
    let (at_backup, path) = rt.block_on(async {
        wait_serving(&server.addr).await;
        write_some_of_everything(&server.addr).await;
        let at_backup = observe(&server.addr).await;
        let backup = SystemClient::new(channel(&server.addr).await)
            .create_backup(pb::CreateBackupRequest {})
            .await
            .expect("backup")
            .into_inner();
        assert!(
            backup.path.starts_with(backups.to_str().expect("utf-8")),
            "{backup:?}"
        );
        assert!(backup.sequence > 0);
        // Changes after the backup are not in it.
        let mut tokens = TokenServiceClient::new(channel(&server.addr).await);
        tokens
            .clear_tokens(pb::ClearTokensRequest {})
            .await
            .expect("clear");
        (at_backup, backup.path)
    });
    server.stop();
    let backup_bytes = std::fs::read(Path::new(&path).join("neurograph.redb")).expect("backup");

    let restore = run_restore(&data, &path);
    assert!(restore.status.success(), "{restore:?}");
    let backup_file = Path::new(&path).join("neurograph.redb");
    assert_eq!(
        std::fs::read(&backup_file).expect("backup"),
        backup_bytes,
        "restoring leaves the backup untouched"
    );

    let server = Server::start_on(&data, &[]);
    rt.block_on(async {
        wait_serving(&server.addr).await;
        let restored = observe(&server.addr).await;
        assert_eq!(restored, at_backup);
    });
    let kept: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("before-restore"))
        .collect();
    assert_eq!(kept.len(), 1, "the replaced store is kept aside");
}

#[test]
fn restore_refuses_a_store_a_running_server_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let rt = runtime();
    let server = Server::start_on(&data, &["--backup-dir", backups.to_str().expect("utf-8")]);
    let path = rt.block_on(async {
        wait_serving(&server.addr).await;
        SystemClient::new(channel(&server.addr).await)
            .create_backup(pb::CreateBackupRequest {})
            .await
            .expect("backup")
            .into_inner()
            .path
    });
    let restore = run_restore(&data, &path);
    assert!(!restore.status.success());
    let output = String::from_utf8_lossy(&restore.stdout).to_string()
        + &String::from_utf8_lossy(&restore.stderr);
    assert!(output.contains("in use by another process"), "{output}");
    drop(server);
}

#[test]
fn a_quarantine_that_expired_while_down_is_restored_at_start() {
    use neurograph::model::cdna::{CdnaConfig, Quarantine, WallTime};
    use neurograph::store::durable::recovery;
    use neurograph::store::durable::schema::{apply_writes, DurableWrite, StoredCdna};
    let dir = tempfile::tempdir().expect("temp dir");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    // Started two hours ago for 60 s, with the weight limits changed during it.
    let started = WallTime(now_ms - 2 * 3600 * 1000);
    let snapshot = CdnaConfig::fresh(started);
    let mut live = snapshot.clone();
    live.min_token_weight = 0.4;
    live.revision = 2;
    {
        let (db, _) = recovery::open(dir.path()).expect("create");
        let txn = db.begin_write().expect("write");
        let write = DurableWrite::PutCdna {
            state: Box::new(StoredCdna {
                config: live,
                quarantine: Some(Quarantine::start(snapshot, started, 60)),
                last_quarantine: None,
                next_history_sequence: 1,
            }),
            new_entries: Vec::new(),
            keep_from: 1,
        };
        apply_writes(&txn, [&write]).expect("apply");
        txn.commit().expect("commit");
    }
    let rt = runtime();
    let server = Server::start_on(dir.path(), &[]);
    rt.block_on(async {
        wait_serving(&server.addr).await;
        let mut cdna = CdnaServiceClient::new(channel(&server.addr).await);
        // Applied during recovery: the first answer already shows it.
        let status = cdna
            .get_quarantine_status(pb::GetQuarantineStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert!(!status.active, "the missed expiry was applied at start");
        let config = cdna
            .get_config(pb::GetConfigRequest {})
            .await
            .expect("config")
            .into_inner();
        assert_eq!(config.min_token_weight, 0.0, "the snapshot is restored");
        assert_eq!(config.revision, 3, "a restore is a change");
        let history = cdna
            .get_history(pb::GetHistoryRequest {
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .expect("history")
            .into_inner()
            .entries;
        assert_eq!(
            history[0].action,
            pb::HistoryAction::QuarantineExpired as i32
        );
    });
}

#[test]
fn a_failed_restore_keeps_the_current_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let rt = runtime();
    let mut server = Server::start_on(&data, &["--backup-dir", backups.to_str().expect("utf-8")]);
    let (before, path) = rt.block_on(async {
        wait_serving(&server.addr).await;
        let path = SystemClient::new(channel(&server.addr).await)
            .create_backup(pb::CreateBackupRequest {})
            .await
            .expect("backup")
            .into_inner()
            .path;
        write_some_of_everything(&server.addr).await;
        (observe(&server.addr).await, path)
    });
    server.stop();
    // The copy cannot be written: a directory sits where it would go.
    std::fs::create_dir(data.join("neurograph.redb.restoring")).expect("block the copy");
    let restore = run_restore(&data, &path);
    assert!(!restore.status.success(), "{restore:?}");

    let mut server = Server::start_on(&data, &[]);
    rt.block_on(async {
        wait_serving(&server.addr).await;
        assert_eq!(
            observe(&server.addr).await,
            before,
            "the store is as it was"
        );
    });
    server.stop();
}

#[test]
fn no_read_shows_a_write_before_it_is_durable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    // A journal that holds every write for ten minutes: a create applies but stays undurable.
    let mut server = Server::start_on(
        dir.path(),
        &["--durability", "batched", "--batch-delay-ms", "600000"],
    );
    rt.block_on(async {
        wait_serving(&server.addr).await;
        let mut writer = TokenServiceClient::new(channel(&server.addr).await);
        let pending = tokio::spawn(async move {
            writer
                .create_token(pb::CreateTokenRequest {
                    token: Some(token(77, 1.0)),
                    ttl_seconds: 0,
                })
                .await
        });
        // Status (exempt from the barrier, like every probe) shows when it has applied.
        let mut system = SystemClient::new(channel(&server.addr).await);
        let started = std::time::Instant::now();
        while system
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .tokens
            .map_or(0, |t| t.total)
            == 0
        {
            assert!(started.elapsed() < LIMIT, "the create never applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut reader = TokenServiceClient::new(channel(&server.addr).await);
        let get = tokio::time::timeout(
            Duration::from_millis(300),
            reader.get_token(pb::GetTokenRequest { id: 77 }),
        );
        assert!(get.await.is_err(), "GetToken waits for the fsync");
        let stream = async {
            let mut stream = reader
                .stream_tokens(pb::StreamTokensRequest { filter: None })
                .await?
                .into_inner();
            stream.message().await
        };
        let streamed = tokio::time::timeout(Duration::from_millis(300), stream);
        assert!(streamed.await.is_err(), "StreamTokens waits for the fsync");
        assert!(!pending.is_finished(), "the create is not acknowledged");
    });
    server.crash();
    let server = Server::start_on(dir.path(), &[]);
    rt.block_on(async {
        wait_serving(&server.addr).await;
        let mut tokens = TokenServiceClient::new(channel(&server.addr).await);
        let lost = tokens
            .get_token(pb::GetTokenRequest { id: 77 })
            .await
            .expect_err("never durable, never acknowledged, never shown");
        assert_eq!(lost.code(), tonic::Code::NotFound);
    });
}
