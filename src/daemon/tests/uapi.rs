//! WireGuard's UAPI as the supervisor answers it, on the fakes: a `set` that fits the
//! line's model restarts the line (and the line on it) with the change and writes the
//! file; one that does not changes neither the host nor the file.

use super::{setup, Sup, VIP_TABLE};
use crate::config::testdata::SERVER_TOML;
use crate::control::uapi::{Errno, PeerSet, Set};
use crate::control::uapi_server::{UapiAnswer, UapiRequest};
use crate::tunnel::keys::{PrivateKey, PublicKey};

/// tunnel_base's peer (the client whose key pair the server keeps).
const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn peer_set(key: &str) -> PeerSet {
    PeerSet {
        public_key: key.parse::<PublicKey>().expect("a key"),
        remove: false,
        update_only: false,
        preshared_key: None,
        endpoint: None,
        persistent_keepalive: None,
        replace_allowed_ips: false,
        allowed_ips: Vec::new(),
    }
}

async fn set(sup: &mut Sup, set: Set) -> UapiAnswer {
    sup.handle_uapi(UapiRequest::Set {
        line: "tunnel_base".into(),
        set: Box::new(set),
    })
    .await
}

#[tokio::test]
async fn get_reports_the_line_from_its_config_and_data_plane() {
    let (mut sup, _shared, _path, _dir) = setup(SERVER_TOML);
    sup.reconcile().await;
    let device = sup
        .handle_uapi(UapiRequest::Get {
            line: "tunnel_base".into(),
        })
        .await
        .expect("an answer")
        .expect("a device");
    assert_eq!(device.peer.public_key, PEER.parse().unwrap());
    assert_eq!(device.peer.persistent_keepalive, 25);
    assert_eq!(
        device.peer.allowed_ips,
        vec!["10.0.0.2/32".parse().unwrap()]
    );
    assert_eq!(device.peer.last_handshake, None);
    let gone = sup
        .handle_uapi(UapiRequest::Get {
            line: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.errno, Errno::NODEV);
}

#[tokio::test]
async fn a_set_restarts_the_line_and_its_child_with_the_change_and_writes_the_file() {
    let (mut sup, shared, path, _dir) = setup(SERVER_TOML);
    sup.reconcile().await;
    assert_eq!(sup.running.len(), 2);
    let mut peer = peer_set(PEER);
    peer.persistent_keepalive = Some(7);
    peer.replace_allowed_ips = true;
    peer.allowed_ips = vec![
        (true, "10.0.0.2/32".parse().unwrap()),
        (true, "10.9.0.0/24".parse().unwrap()),
    ];
    let answer = set(
        &mut sup,
        Set {
            peers: vec![peer],
            ..Set::default()
        },
    )
    .await;
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains("persistent_keepalive = 7"), "{file}");
    assert!(file.contains("allowed_ips = [\"10.9.0.0/24\"]"), "{file}");
    assert_eq!(sup.running.len(), 2, "both lines run again");
    let world = shared.world();
    for entry in ["stop tunnel_secure", "stop tunnel_base"] {
        assert!(world.log.iter().any(|e| e == entry), "{:#?}", world.log);
    }
    let ifindex =
        crate::dataplane::RunningLine::ifindex(&sup.running[&super::name("tunnel_base")].dataplane);
    assert!(
        world.routes.iter().any(|r| r.dst == super::ip("10.9.0.0")
            && r.prefix == 24
            && r.oif == ifindex
            && r.table == VIP_TABLE),
        "{:#?}",
        world.routes
    );
}

#[tokio::test]
async fn what_would_break_the_line_is_refused_and_changes_nothing() {
    let (mut sup, shared, path, _dir) = setup(SERVER_TOML);
    sup.reconcile().await;
    let file = std::fs::read(&path).unwrap();
    let host = shared.world().snapshot();
    let mut remove = peer_set(PEER);
    remove.remove = true;
    let mut no_vip = peer_set(PEER);
    no_vip.replace_allowed_ips = true;
    no_vip.allowed_ips = vec![(true, "10.9.0.0/24".parse().unwrap())];
    let mut other_family = peer_set(PEER);
    other_family.allowed_ips = vec![(true, "2001:db8::/64".parse().unwrap())];
    let mut server_endpoint = peer_set(PEER);
    server_endpoint.endpoint = Some("198.51.100.20:4000".parse().unwrap());
    let cases = [
        (
            Set {
                peers: vec![peer_set("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=")],
                ..Set::default()
            },
            Errno::PERM,
        ),
        (
            Set {
                replace_peers: true,
                ..Set::default()
            },
            Errno::PERM,
        ),
        (
            Set {
                peers: vec![remove],
                ..Set::default()
            },
            Errno::PERM,
        ),
        (
            Set {
                private_key: Some(PrivateKey::generate()),
                ..Set::default()
            },
            Errno::PERM,
        ),
        (
            Set {
                fwmark: Some(1),
                ..Set::default()
            },
            Errno::PERM,
        ),
        (
            Set {
                peers: vec![no_vip],
                ..Set::default()
            },
            Errno::PERM,
        ),
        (
            Set {
                peers: vec![server_endpoint],
                ..Set::default()
            },
            Errno::PERM,
        ),
        (
            Set {
                peers: vec![other_family],
                ..Set::default()
            },
            Errno::INVAL,
        ),
    ];
    for (s, errno) in cases {
        let what = format!("{s:?}");
        let refused = set(&mut sup, s).await.unwrap_err();
        assert_eq!(refused.errno, errno, "{what}: {}", refused.message);
        assert_eq!(std::fs::read(&path).unwrap(), file, "{what}");
        assert_eq!(shared.world().snapshot(), host, "{what}");
    }
    // A set that changes nothing is no restart either.
    let same = Set {
        listen_port: Some(51820),
        fwmark: Some(0),
        peers: vec![peer_set(PEER)],
        ..Set::default()
    };
    assert!(matches!(set(&mut sup, same).await, Ok(None)));
    assert_eq!(shared.world().snapshot(), host);
}
