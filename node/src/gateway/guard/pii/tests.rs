//! The PII validators on what they must and must not find.

use super::*;

fn found(entity: PiiEntity, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    scan(&[entity], text.as_bytes(), &mut out);
    out.into_iter()
        .map(|f| text[f.start..f.end].to_owned())
        .collect()
}

#[test]
fn emails_need_a_real_domain() {
    assert_eq!(
        found(PiiEntity::Email, "mail jane.doe+x@example.co.uk now"),
        ["jane.doe+x@example.co.uk"]
    );
    assert!(found(PiiEntity::Email, "user@localhost and a@b.c and x@-bad-.com").is_empty());
}

#[test]
fn phones_follow_their_numbering_plan() {
    assert_eq!(
        found(PiiEntity::Phone, "call (415) 555-2671."),
        ["(415) 555-2671"]
    );
    assert_eq!(
        found(PiiEntity::Phone, "+44 20 7946 0958x"),
        Vec::<String>::new()
    );
    assert_eq!(
        found(PiiEntity::Phone, "cell +447911123456 ok"),
        ["+447911123456"]
    );
    // Area codes and exchanges start 2-9; a longer number is not a phone number.
    assert!(found(PiiEntity::Phone, "id 115-555-2671 and 415-155-2671").is_empty());
    assert!(found(PiiEntity::Phone, "v1.415.555.2671.3").is_empty());
}

#[test]
fn cards_pass_luhn_and_name_an_issuer() {
    assert_eq!(
        found(PiiEntity::CreditCard, "card 4111 1111 1111 1111 exp"),
        ["4111 1111 1111 1111"]
    );
    assert_eq!(
        found(PiiEntity::CreditCard, "5500-0000-0000-0004"),
        ["5500-0000-0000-0004"]
    );
    assert_eq!(
        found(PiiEntity::CreditCard, "amex 378282246310005"),
        ["378282246310005"]
    );
    // Luhn fails; no issuer; mixed separators; part of a longer number.
    assert!(found(PiiEntity::CreditCard, "4111 1111 1111 1112").is_empty());
    assert!(found(PiiEntity::CreditCard, "1234567812345670").is_empty());
    assert!(found(PiiEntity::CreditCard, "4111-1111 1111-1111").is_empty());
    assert!(found(PiiEntity::CreditCard, "x41111111111111111").is_empty());
    assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
    // Grouped as no card is printed (a hex dump that happens to pass Luhn).
    assert!(found(PiiEntity::CreditCard, "30 80 02 03 01 00 01 00 00 05 9").is_empty());
    // A Mastercard prefix on 19 digits (a u64 constant) is no card.
    assert!(found(
        PiiEntity::CreditCard,
        "const MAGIC: u64 = 5575266562640200287;"
    )
    .is_empty());
    assert_eq!(
        found(PiiEntity::CreditCard, "3782 822463 10005"),
        ["3782 822463 10005"]
    );
}

#[test]
fn ssns_follow_the_area_group_and_serial_rules() {
    assert_eq!(found(PiiEntity::Ssn, "ssn 536-22-1234."), ["536-22-1234"]);
    for bad in [
        "000-12-3456",
        "666-12-3456",
        "912-12-3456",
        "536-00-1234",
        "536-22-0000",
        "078-05-1120",
    ] {
        assert!(found(PiiEntity::Ssn, bad).is_empty(), "{bad}");
    }
    assert!(found(PiiEntity::Ssn, "2024-536-22-1234").is_empty());
}

#[test]
fn ibans_check_their_length_and_mod_97() {
    assert_eq!(
        found(PiiEntity::Iban, "pay GB82 WEST 1234 5698 7654 32 today"),
        ["GB82 WEST 1234 5698 7654 32"]
    );
    assert_eq!(
        found(PiiEntity::Iban, "DE89370400440532013000"),
        ["DE89370400440532013000"]
    );
    assert!(found(PiiEntity::Iban, "GB82 WEST 1234 5698 7654 33").is_empty());
    assert!(found(PiiEntity::Iban, "ZZ82WEST12345698765432").is_empty());
}

#[test]
fn ip_addresses_parse() {
    assert_eq!(
        found(PiiEntity::Ip, "from 192.168.1.20 and 10.0.0.1."),
        ["192.168.1.20", "10.0.0.1"]
    );
    assert!(found(PiiEntity::Ip, "999.1.1.1 01.2.3.4 1.2.3.4.5").is_empty());
    assert_eq!(
        found(PiiEntity::Ip, "host 2001:4860::8a2e:370:7334 up"),
        ["2001:4860::8a2e:370:7334"]
    );
    assert_eq!(found(PiiEntity::Ip, "fe80::1"), ["fe80::1"]);
    // Addresses of nobody: loopback, unspecified, broadcast, documentation, multicast.
    for nobody in [
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "192.0.2.7",
        "224.0.0.1",
        "::1",
        "2001:db8::1",
    ] {
        assert!(found(PiiEntity::Ip, nobody).is_empty(), "{nobody}");
    }
    // Paths of most languages are not addresses.
    assert!(found(PiiEntity::Ip, "std::io::Read; a::b; Self::ab1; dead::beef").is_empty());
}

#[test]
fn digits_are_found_eight_bytes_at_a_time() {
    let text = b"abcdefghijklmnop7qrstuvwxyz/:;9";
    assert_eq!(next_digit(text, 0), Some(16));
    assert_eq!(next_digit(text, 17), Some(30));
    assert_eq!(next_digit(b"no digits here at all, none!", 0), None);
    for b in 0..=255u8 {
        let text = [b'x', b'x', b'x', b'x', b'x', b'x', b'x', b, b'x'];
        assert_eq!(next_digit(&text, 0), b.is_ascii_digit().then_some(7), "{b}");
    }
}

#[test]
#[ignore = "a measurement helper: what each entity costs on a text"]
fn print_costs() {
    let text = std::fs::read(std::env::var("GUARD_TEXT").unwrap_or_default()).unwrap_or_default();
    scan(&PiiEntity::ALL, &text, &mut Vec::new());
    let t = std::time::Instant::now();
    for _ in 0..20 {
        scan(&PiiEntity::ALL, &text, &mut Vec::new());
    }
    println!("all: {:?} per scan", t.elapsed() / 20);
    let t = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..20 {
        n += runs(&text, &NUMBERISH, next_digit, |b| b.is_ascii_digit(), 4).len();
    }
    println!("runs: {:?} per scan, {} runs", t.elapsed() / 20, n / 20);
    for entity in PiiEntity::ALL {
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        for _ in 0..20 {
            out.clear();
            scan(&[entity], &text, &mut out);
        }
        println!(
            "{}: {:?} per scan, {} found",
            entity.name(),
            t.elapsed() / 20,
            out.len()
        );
    }
}
