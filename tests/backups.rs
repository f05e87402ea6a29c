//! System/CreateBackup on the embedded store (API.md §8, "Limits against abuse"): one backup at
//! a time (another call meanwhile is ABORTED `a backup is running`), `--backup-keep` keeps the
//! newest N, a failed backup leaves no directory, and `.partial` directories a crash left are
//! removed at start. Restoring a backup is covered by `tests/persistence.rs`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::{channel, limit_file_size, wait_serving, Server};
use common::TestServer;
use neurograph::api::pb;
use neurograph::api::pb::system_client::SystemClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::config::StorageKind;
use tonic::transport::Channel;
use tonic::Code;

/// Message of a CreateBackup refused while another runs, exactly (API.md §8).
const BACKUP_RUNNING: &str = "a backup is running";
/// Tokens per ImportTokens message (the most one may carry).
const IMPORT_CHUNK: usize = 10_000;
/// Tokens that make a backup take long enough (about 2 s in a debug build, where a refused
/// call takes a few milliseconds) for other calls to arrive while it runs.
const BIG_STORE: usize = 100_000;
/// Bound on waiting for a backup's `.partial` directory to appear: a hang is what it catches.
const PARTIAL_LIMIT: Duration = Duration::from_secs(120);

/// A server on the embedded store in `dir/data`, backing up into `dir/backups` and keeping
/// `keep` backups, once it serves.
async fn embedded_server(dir: &Path, keep: u32) -> TestServer {
    let server = TestServer::start_with(|config| {
        config.storage = StorageKind::Embedded;
        config.data_dir = dir.join("data");
        config.backup_dir = dir.join("backups");
        config.backup_keep = keep;
    })
    .await;
    wait_serving(&server.addr.to_string()).await;
    server
}

/// Imports `total` tokens (a multiple of `IMPORT_CHUNK`) in one ImportTokens stream.
async fn import(channel: Channel, total: usize) {
    let messages = (0..total / IMPORT_CHUNK).map(|_| pb::ImportTokensRequest {
        tokens: vec![
            pb::Token {
                weight: 0.5,
                ..pb::Token::default()
            };
            IMPORT_CHUNK
        ],
        ttl_seconds: 0,
    });
    let report = TokenServiceClient::new(channel)
        .import_tokens(tokio_stream::iter(messages))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(report.created, total as u64, "{report:?}");
}

/// Asks for a backup on `client`.
async fn backup(
    client: &mut SystemClient<Channel>,
) -> Result<pb::CreateBackupResponse, tonic::Status> {
    client
        .create_backup(pb::CreateBackupRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// Names of everything in `dir` (none when it does not exist).
fn entries(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|entry| {
                entry
                    .expect("dir entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8 name")
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    }
}

/// The directory name of a backup's returned path.
fn name_of(backup: &pb::CreateBackupResponse) -> String {
    Path::new(&backup.path)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a backup path ends in its directory name")
        .to_owned()
}

/// Asserts `status` is the refusal of a call made while a backup runs.
fn assert_backup_running(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), BACKUP_RUNNING, "{status:?}");
}

/// Waits until a `.partial` directory shows up in `dir` and returns its name; fails if `call`
/// (the backup making it) ends first.
async fn wait_partial(dir: &Path, call: &tokio::task::JoinHandle<impl Sized>) -> String {
    let started = Instant::now();
    loop {
        if let Some(partial) = entries(dir).into_iter().find(|n| n.ends_with(".partial")) {
            return partial;
        }
        assert!(
            !call.is_finished(),
            "the backup ended before its .partial directory was seen: make the store bigger"
        );
        assert!(
            started.elapsed() < PARTIAL_LIMIT,
            "no .partial directory in {} within {PARTIAL_LIMIT:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_run_one_at_a_time() {
    const CALLERS: usize = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let backups = dir.path().join("backups");
    let server = embedded_server(dir.path(), 0).await;
    import(server.channel().await, BIG_STORE).await;

    // Several calls at once, each on its own connection (connected beforehand, so the calls
    // leave within milliseconds of each other while a backup takes seconds). At least one
    // wins; the others are ABORTED. The one race left: a call delayed until the winner is
    // done would rightly start a backup of its own, so more than one success is allowed
    // here; the second round below closes that gap.
    let mut clients = Vec::new();
    for _ in 0..CALLERS {
        clients.push(SystemClient::new(server.channel().await));
    }
    let calls: Vec<_> = clients
        .into_iter()
        .map(|mut client| tokio::spawn(async move { backup(&mut client).await }))
        .collect();
    let mut made = BTreeSet::new();
    for call in calls {
        match call.await.expect("the call task did not panic") {
            Ok(done) => {
                made.insert(name_of(&done));
            }
            Err(status) => assert_backup_running(&status),
        }
    }
    assert!(!made.is_empty(), "one of the simultaneous backups succeeds");
    assert_eq!(
        entries(&backups),
        made,
        "each success left one backup, nothing else"
    );

    // While a backup is seen running (its `.partial` directory exists: the server marks the
    // backup running before creating it and clears the mark only after renaming it), every
    // other call is refused. The directory is still there after the refusals came back, so
    // the backup ran during all of them: no race is left.
    let mut first_client = SystemClient::new(server.channel().await);
    let mut others = Vec::new();
    for _ in 0..CALLERS {
        others.push(SystemClient::new(server.channel().await));
    }
    let first = tokio::spawn(async move { backup(&mut first_client).await });
    let partial = wait_partial(&backups, &first).await;
    let refusals: Vec<_> = others
        .into_iter()
        .map(|mut client| tokio::spawn(async move { backup(&mut client).await }))
        .collect();
    let mut refused = Vec::new();
    for call in refusals {
        refused.push(call.await.expect("the call task did not panic"));
    }
    assert!(
        backups.join(&partial).exists(),
        "the backup finished before the other calls were answered: make the store bigger"
    );
    for result in &refused {
        let status = result.as_ref().expect_err("refused while a backup runs");
        assert_backup_running(status);
    }
    let first = first
        .await
        .expect("the call task did not panic")
        .expect("the running backup succeeds");
    assert_eq!(partial, format!(".{}.partial", name_of(&first)));

    // The mark is released: the next call backs up again.
    let again = backup(&mut server.system().await)
        .await
        .expect("a backup after the others succeeds");
    made.extend([name_of(&first), name_of(&again)]);
    assert_eq!(entries(&backups), made);
}

/// Makes `count` backups one after another on a server keeping `keep`, with a write between
/// two (so each holds something new); returns the names the calls returned, oldest first,
/// and what the backup directory held after each.
async fn backups_in_a_row(keep: u32, count: usize) -> (Vec<String>, Vec<BTreeSet<String>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = embedded_server(dir.path(), keep).await;
    let mut system = server.system().await;
    let mut tokens = server.tokens().await;
    let mut made = Vec::new();
    let mut listed = Vec::new();
    for i in 0..count {
        common::create(&mut tokens, common::token_at(0.5, i as f32, 0.0, 0.0)).await;
        let done = backup(&mut system).await.expect("backup");
        made.push(name_of(&done));
        listed.push(entries(&dir.path().join("backups")));
    }
    (made, listed)
}

#[tokio::test]
async fn backup_keep_deletes_all_but_the_newest() {
    let (made, listed) = backups_in_a_row(2, 4).await;
    let distinct: BTreeSet<&String> = made.iter().collect();
    assert_eq!(distinct.len(), 4, "every backup has its own name: {made:?}");
    for (i, after) in listed.iter().enumerate() {
        let newest: BTreeSet<String> = made[i.saturating_sub(1)..=i].iter().cloned().collect();
        assert_eq!(after, &newest, "after backup {}: {made:?}", i + 1);
    }
}

#[tokio::test]
async fn backup_keep_zero_keeps_every_backup() {
    let (made, listed) = backups_in_a_row(0, 4).await;
    let all: BTreeSet<String> = made.iter().cloned().collect();
    assert_eq!(all.len(), 4, "every backup has its own name: {made:?}");
    assert_eq!(listed.last(), Some(&all));
}

/// `--backup-dir DIR` as arguments.
fn backup_dir_args(backups: &Path) -> [&str; 2] {
    ["--backup-dir", backups.to_str().expect("utf-8 temp path")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_leaves_no_directory() {
    // Writing the copy must fail after its `.partial` directory exists. The tests may run as
    // root, whom permissions do not stop, so the server runs with a file size limit below
    // the size of the copy: creating the directory works, writing the store file in it fails
    // (EFBIG). The store itself is filled beforehand without the limit, and nothing is written
    // to it while the limit holds.
    const FILE_LIMIT: u64 = 1 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let mut server = Server::start_on(&data, &backup_dir_args(&backups));
    wait_serving(&server.addr).await;
    import(channel(&server.addr).await, BIG_STORE).await;
    server.stop();
    let store_bytes = std::fs::metadata(data.join("neurograph.redb"))
        .expect("store file")
        .len();
    assert!(
        store_bytes > 4 * FILE_LIMIT,
        "a copy of the store ({store_bytes} bytes) must not fit under the limit"
    );

    let args: Vec<&str> = ["--storage", "embedded", "--data-dir"]
        .into_iter()
        .chain([data.to_str().expect("utf-8 temp path")])
        .chain(backup_dir_args(&backups))
        .collect();
    let mut server = Server::spawn_with(env!("CARGO_BIN_EXE_neurograph"), &args, |command| {
        limit_file_size(command, FILE_LIMIT)
    });
    wait_serving(&server.addr).await;
    let before = entries(&backups);
    let failed = backup(&mut SystemClient::new(channel(&server.addr).await))
        .await
        .expect_err("the copy cannot be written");
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    assert!(failed.message().starts_with("backup failed"), "{failed:?}");
    assert_eq!(
        entries(&backups),
        before,
        "no .partial and no backup left behind"
    );
    assert!(before.is_empty(), "{before:?}");

    // The store is untouched, and a later backup is not refused as running.
    let mut tokens = TokenServiceClient::new(channel(&server.addr).await);
    assert_eq!(common::count(&mut tokens).await, BIG_STORE as u64);
    let again = backup(&mut SystemClient::new(channel(&server.addr).await))
        .await
        .expect_err("still cannot be written");
    assert_eq!(again.code(), Code::Internal, "{again:?}");
    assert!(entries(&backups).is_empty());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_backups_are_removed_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backups = dir.path().join("backups");
    let partial = backups.join(".neurograph-123-seq4.partial");
    let complete = backups.join("neurograph-100-seq1");
    let unrelated = backups.join("notes");
    for made in [&partial, &complete, &unrelated] {
        std::fs::create_dir_all(made).expect("mkdir");
        std::fs::write(made.join("neurograph.redb"), b"half a copy").expect("write");
    }

    let mut server = Server::start_on(&dir.path().join("data"), &backup_dir_args(&backups));
    wait_serving(&server.addr).await;
    assert_eq!(
        entries(&backups),
        BTreeSet::from(["neurograph-100-seq1".to_owned(), "notes".to_owned()]),
        "only the unfinished backup is gone"
    );
    let line = server.wait_log("deleted unfinished backups", 1);
    assert!(line.contains(".neurograph-123-seq4.partial"), "{line}");
    assert_eq!(
        std::fs::read(complete.join("neurograph.redb")).expect("kept"),
        b"half a copy"
    );
    server.stop();
}
