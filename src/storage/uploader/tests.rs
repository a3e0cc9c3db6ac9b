use super::*;

fn store(dir: &Path) -> Arc<Store> {
    Store::new(Target::parse(&format!("file://{}", dir.display())).unwrap()).unwrap()
}

fn put(store: &Arc<Store>, name: &str, body: &'static [u8]) -> Job {
    Job {
        store: store.clone(),
        name: name.into(),
        op: Op::Put {
            body: vec![Bytes::from_static(body)],
            content_type: if name.ends_with(".m3u8") {
                PLAYLIST
            } else {
                "video/iso.segment"
            },
            cache_control: "no-cache",
        },
        order: "live/x".into(),
    }
}

/// An uploader without its thread: one lane holding `per_lane` jobs, to look at the queue.
fn one_lane(per_lane: usize) -> Uploader {
    Uploader {
        lanes: vec![Lane {
            jobs: Mutex::default(),
            notify: Notify::new(),
        }],
        per_lane,
        depth: AtomicUsize::new(0),
    }
}

#[test]
fn a_newer_put_replaces_a_queued_one_and_a_full_lane_drops_its_oldest() {
    let up = one_lane(3);
    let s = store(Path::new("/tmp"));
    up.submit(put(&s, "a/index.m3u8", b"1"));
    up.submit(put(&s, "a/seg-1", b"s"));
    up.submit(put(&s, "a/index.m3u8", b"2"));
    assert_eq!(up.depth(), 2);
    let names: Vec<String> = up.lanes[0]
        .jobs
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.job.name.clone())
        .collect();
    assert_eq!(names, ["a/seg-1", "a/index.m3u8"]);
    up.submit(put(&s, "a/seg-2", b"s"));
    up.submit(put(&s, "a/seg-3", b"s"));
    assert_eq!(up.depth(), 3);
    let first = up.lanes[0]
        .jobs
        .lock()
        .unwrap()
        .front()
        .unwrap()
        .job
        .name
        .clone();
    assert_eq!(first, "a/index.m3u8", "seg-1, the oldest, was dropped");
}

#[test]
fn deletes_stay_behind_a_replaced_playlist_and_are_never_dropped() {
    let up = one_lane(3);
    let s = store(Path::new("/tmp"));
    let delete = |name: &str| Job {
        store: s.clone(),
        name: name.into(),
        op: Op::Delete,
        order: "live/x".into(),
    };
    up.submit(put(&s, "a/media.m3u8", b"1"));
    up.submit(delete("a/seg-1"));
    up.submit(put(&s, "a/media.m3u8", b"2"));
    let names = |up: &Uploader| -> Vec<String> {
        let q = up.lanes[0].jobs.lock().unwrap();
        q.iter().map(|q| q.job.name.clone()).collect()
    };
    assert_eq!(names(&up), ["a/media.m3u8", "a/seg-1"]);
    up.submit(put(&s, "a/seg-9", b"s"));
    up.submit(put(&s, "a/seg-10", b"s"));
    // Full: the oldest media object went; the playlist and the delete stayed.
    assert_eq!(names(&up), ["a/media.m3u8", "a/seg-1", "a/seg-10"]);
}

#[test]
fn files_are_written_whole_and_deletes_of_missing_files_succeed() {
    let dir = std::env::temp_dir().join(format!("rtmp-edge-store-{}", std::process::id()));
    let path = dir.join("live/x/seg-1.m4s");
    let op = Op::Put {
        body: vec![Bytes::from_static(b"seg"), Bytes::from_static(b"ment")],
        content_type: "video/iso.segment",
        cache_control: "max-age=60",
    };
    file_op(&path, &op).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"segment");
    file_op(&path, &Op::Delete).unwrap();
    file_op(&path, &Op::Delete).unwrap();
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
