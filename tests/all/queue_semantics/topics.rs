//! The queue contract, continued: deferrals, and subscriptions over several topics
//! (declared, redeclared, retired), on both backend sets.

use super::*;

both!(
    deferring_does_not_count_a_delivery,
    one_subscription_takes_several_topics,
    redeclaring_a_subscription_changes_its_topics,
    retiring_a_subscription_moves_what_it_holds,
);

async fn deferring_does_not_count_a_delivery(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    // A failure counts.
    let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    assert_eq!(d.deliveries, 1);
    s.queue
        .retry("a", &d.receipt, Some(Duration::ZERO), "failed once")
        .await
        .unwrap();
    s.pass(Duration::ZERO).await;
    // Waits, more of them than max_deliveries (3) allows deliveries, do not.
    for wait in 1..=4 {
        let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
        assert_eq!(d.len(), 1, "wait {wait}: not redelivered after deferrals");
        assert_eq!((d[0].id.as_str(), d[0].deliveries), ("m", 2), "wait {wait}");
        assert_eq!(d[0].body, b"body-m");
        s.queue
            .defer("a", &d[0].receipt, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty(),
            "wait {wait}: delivered before the deferral's delay"
        );
        if s.strict_receipts {
            // The deferral gave the lease up.
            assert!(matches!(
                s.queue.ack("a", &[d[0].receipt.clone()]).await,
                Ok(0)
            ));
            assert!(matches!(
                s.queue.defer("a", &d[0].receipt, Duration::ZERO).await,
                Err(Error::LeaseLost { .. })
            ));
        }
        s.pass(Duration::from_secs(1)).await;
    }
    assert_eq!(s.dead.dead_letters("a", 10).await.unwrap().len(), 0);
    // Deliveries still count after deferrals: leases running out use up the rest.
    for attempt in 2..=3u32 {
        let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
        assert_eq!(d.len(), 1, "attempt {attempt}");
        assert_eq!(d[0].deliveries, attempt);
        s.pass(VISIBILITY).await;
    }
    assert!(s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = s.dead.dead_letters("a", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].id.as_str(), dead[0].reason.as_str()),
        ("m", REASON_MAX_DELIVERIES)
    );
    assert_eq!(dead[0].body, "body-m");
}

async fn one_subscription_takes_several_topics(s: Set) {
    s.sub_topics("a", &["t2", "t1"]).await;
    s.sub("b", "t2", None).await;
    assert_eq!(s.queue.publish("t1", &[msg("m1")]).await.unwrap(), 1);
    assert_eq!(s.queue.publish("t2", &[msg("m2")]).await.unwrap(), 2);
    assert_eq!(s.queue.publish("t3", &[msg("m3")]).await.unwrap(), 0);
    assert_eq!(s.ids("a").await, ["m1", "m2"]);
    assert_eq!(s.ids("b").await, ["m2"]);
    assert_eq!(s.topics_of("a").await, ["t1", "t2"]);
}

async fn redeclaring_a_subscription_changes_its_topics(s: Set) {
    // Long enough that SQS keeps the list in more than one tag.
    let long: Vec<String> = (0..3).map(|i| format!("{}.{i}", "t".repeat(120))).collect();
    let mut first: Vec<&str> = long.iter().map(String::as_str).collect();
    first.push("t1");
    s.sub_topics("a", &first).await;
    assert_eq!(s.queue.publish(&long[2], &[msg("l")]).await.unwrap(), 1);
    assert_eq!(s.ids("a").await, ["l"]);

    s.sub_topics("a", &["t1", "t2"]).await;
    assert_eq!(s.topics_of("a").await, ["t1", "t2"]);
    for dropped in &long {
        assert_eq!(
            s.queue.publish(dropped, &[msg("x")]).await.unwrap(),
            0,
            "a dropped topic still reaches it"
        );
    }
    assert_eq!(s.queue.publish("t1", &[msg("m1")]).await.unwrap(), 1);
    assert_eq!(s.queue.publish("t2", &[msg("m2")]).await.unwrap(), 1);
    assert_eq!(s.ids("a").await, ["m1", "m2"]);

    s.sub("a", "t3", None).await;
    assert_eq!(s.topics_of("a").await, ["t3"]);
    assert_eq!(s.queue.publish("t1", &[msg("n1")]).await.unwrap(), 0);
    assert_eq!(s.queue.publish("t3", &[msg("n3")]).await.unwrap(), 1);
    assert_eq!(s.ids("a").await, ["n3"]);
}

async fn retiring_a_subscription_moves_what_it_holds(s: Set) {
    s.sub("old", "t", None).await;
    s.sub("new", "u", None).await;
    assert_eq!(
        s.queue
            .publish("t", &[msg("waiting"), msg("dead")])
            .await
            .unwrap(),
        2
    );
    for d in s.queue.receive("old", 10, NO_WAIT).await.unwrap() {
        if d.id == "dead" {
            s.queue
                .reject("old", &d.receipt, "bad_input", "unreadable")
                .await
                .unwrap();
        } else {
            s.queue
                .retry("old", &d.receipt, Some(Duration::ZERO), "busy")
                .await
                .unwrap();
        }
    }

    let retired = s.queue.retire("old", "new").await.unwrap();
    assert_eq!((retired.moved, retired.left), (2, 0));
    assert_eq!(s.queue.publish("t", &[msg("later")]).await.unwrap(), 0);
    let names: Vec<String> = s
        .queue
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["new"]);
    // The message keeps its id, body and the delivery it had.
    let got = s.queue.receive("new", 10, NO_WAIT).await.unwrap();
    let got: Vec<_> = got
        .iter()
        .map(|d| (d.id.as_str(), d.body.as_slice(), d.deliveries))
        .collect();
    assert_eq!(got, [("waiting", b"body-waiting".as_slice(), 2)]);
    let dead = s.dead.dead_letters("new", 10).await.unwrap();
    let dead: Vec<_> = dead
        .iter()
        .map(|l| (l.id.as_str(), l.reason.as_str(), l.last_error.as_deref()))
        .collect();
    assert_eq!(dead, [("dead", "bad_input", Some("unreadable"))]);

    assert_eq!(
        s.queue.retire("old", "new").await.unwrap(),
        troupe_core::Retired::default()
    );
    assert_eq!(
        s.queue.retire("never-was", "new").await.unwrap(),
        troupe_core::Retired::default()
    );
    assert!(matches!(
        s.queue.retire("new", "gone").await,
        Err(Error::NoSuchQueue(_))
    ));
}
