//! serde: Rust types to and from edn values.

use std::collections::{BTreeMap, HashMap};

use sente_edn::{
    Inst, Keyword, Map, ReadOptions, Value, from_str, from_value, from_value_ref, read, to_string,
    to_value,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[allow(clippy::struct_field_names)]
    user_id: u64,
    name: String,
    email: Option<String>,
    roles: Vec<Role>,
    score: f64,
    tags: BTreeMap<String, i32>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(rename_all = "kebab-case")]
enum Role {
    Admin,
    Guest,
    Custom(String),
    Limited { until: i64 },
    Pair(i32, i32),
}

fn user() -> User {
    User {
        user_id: 7,
        name: "Ada".into(),
        email: None,
        roles: vec![
            Role::Admin,
            Role::Custom("ops".into()),
            Role::Limited { until: 5 },
            Role::Pair(1, 2),
        ],
        score: 1.5,
        tags: BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
    }
}

#[test]
fn struct_round_trip() {
    let u = user();
    let text = to_string(&u).unwrap();
    assert_eq!(
        text,
        r#"{:user-id 7, :name "Ada", :email nil, :roles [:admin {:custom "ops"} {:limited {:until 5}} {:pair [1 2]}], :score 1.5, :tags {"a" 1, "b" 2}}"#
    );
    assert_eq!(from_str::<User>(&text).unwrap(), u);
    let v = to_value(&u).unwrap();
    assert_eq!(from_value::<User>(v.clone()).unwrap(), u);
    assert_eq!(from_value_ref::<User>(&v).unwrap(), u);
}

#[test]
fn field_names_as_is_without_rename() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Plain {
        user_id: i32,
    }
    assert_eq!(to_string(&Plain { user_id: 1 }).unwrap(), "{:user_id 1}");
    assert_eq!(
        from_str::<Plain>("{:user_id 1}").unwrap(),
        Plain { user_id: 1 }
    );
    // String keys match field names too.
    assert_eq!(
        from_str::<Plain>(r#"{"user_id" 1}"#).unwrap(),
        Plain { user_id: 1 }
    );
}

#[test]
fn lenient_deserialization() {
    #[derive(Deserialize, Debug, PartialEq)]
    struct Msg {
        id: String,
        kind: String,
        n: f64,
        at: String,
        uid: String,
        xs: Vec<i32>,
        ys: Vec<i32>,
        c: char,
    }
    let m: Msg = from_str(
        r#"{:id :my-app/req, :kind :ok, :n 42, :at #inst "2024-01-02T03:04:05.678-00:00",
            :uid #uuid "66d96ab4-9834-40db-a3cd-42b361503ab9", :xs (1 2), :ys #{3}, :c \x}"#,
    )
    .unwrap();
    assert_eq!(m.id, "my-app/req");
    assert_eq!(m.kind, "ok");
    assert!((m.n - 42.0).abs() < f64::EPSILON);
    assert_eq!(m.at, "2024-01-02T03:04:05.678-00:00");
    assert_eq!(m.uid, "66d96ab4-9834-40db-a3cd-42b361503ab9");
    assert_eq!((m.xs, m.ys, m.c), (vec![1, 2], vec![3], 'x'));

    // Keyword map keys into HashMap<String, _>.
    let h: HashMap<String, i32> = from_str("{:a 1, :b/c 2}").unwrap();
    assert_eq!(h, HashMap::from([("a".into(), 1), ("b/c".into(), 2)]));
    // nil as an empty collection; missing Option fields.
    #[derive(Deserialize, Debug, PartialEq)]
    struct Opt {
        xs: Vec<i32>,
        o: Option<i32>,
        #[serde(default)]
        d: i32,
    }
    assert_eq!(
        from_str::<Opt>("{:xs nil}").unwrap(),
        Opt {
            xs: vec![],
            o: None,
            d: 0
        }
    );
    // Enums from vectors and tagged literals.
    assert_eq!(
        from_str::<Role>("[:custom \"x\"]").unwrap(),
        Role::Custom("x".into())
    );
    assert_eq!(from_str::<Role>("[:admin]").unwrap(), Role::Admin);
    assert_eq!(from_str::<Role>("\"guest\"").unwrap(), Role::Guest);
    assert_eq!(
        from_str::<Role>("#limited {:until 3}").unwrap(),
        Role::Limited { until: 3 }
    );
    // Errors are errors, not panics.
    assert!(from_str::<User>("[1 2]").is_err());
    assert!(from_str::<u8>("300").is_err());
    assert!(from_str::<u8>("-1").is_err());
    assert!(from_str::<Role>("{:nope 1}").is_err());
    assert!(from_str::<(i32, i32)>("[1 2 3]").is_err());
    assert!(from_str::<i32>("[1").is_err());
}

#[test]
fn scalars_and_numbers() {
    assert_eq!(to_value(&()).unwrap(), Value::Nil);
    assert_eq!(to_value(&None::<i32>).unwrap(), Value::Nil);
    assert_eq!(to_value(&Some(3)).unwrap(), Value::Int(3));
    assert_eq!(to_value(&'x').unwrap(), Value::Char('x'));
    assert_eq!(to_string(&u64::MAX).unwrap(), "18446744073709551615N");
    assert_eq!(
        to_string(&i128::MIN).unwrap(),
        "-170141183460469231731687303715884105728N"
    );
    assert_eq!(to_string(&5u128).unwrap(), "5");
    assert_eq!(from_str::<u64>("18446744073709551615N").unwrap(), u64::MAX);
    assert_eq!(from_str::<u64>("18446744073709551615").unwrap(), u64::MAX);
    assert_eq!(
        from_str::<i128>("-170141183460469231731687303715884105728").unwrap(),
        i128::MIN
    );
    assert_eq!(
        from_str::<u128>("340282366920938463463374607431768211455").unwrap(),
        u128::MAX
    );
    assert_eq!(from_str::<i64>("42N").unwrap(), 42);
    assert!((from_str::<f64>("1/4").unwrap() - 0.25).abs() < f64::EPSILON);
    assert!((from_str::<f64>("1.5M").unwrap() - 1.5).abs() < f64::EPSILON);
    assert_eq!(to_string(&(1, "a", [true])).unwrap(), r#"[1 "a" [true]]"#);
    assert_eq!(
        from_str::<(i32, String, [bool; 1])>(r#"[1 "a" (true)]"#).unwrap(),
        (1, "a".into(), [true])
    );
    assert_eq!(to_string(&Role::Guest).unwrap(), ":guest");
    #[derive(Serialize)]
    struct Unit;
    assert_eq!(to_string(&Unit).unwrap(), "nil");
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrapper(String);
    assert_eq!(to_string(&Wrapper("w".into())).unwrap(), "\"w\"");
    assert_eq!(from_str::<Wrapper>(":w").unwrap(), Wrapper("w".into()));
}

#[test]
fn bytes() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct B {
        #[serde(with = "serde_bytes_like")]
        data: Vec<u8>,
    }
    mod serde_bytes_like {
        pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(v.to_vec())
                }
            }
            d.deserialize_bytes(V)
        }
    }
    let b = B {
        data: vec![1, 2, 255],
    };
    let v = to_value(&b).unwrap();
    assert_eq!(
        v.as_map().unwrap().get_kw("data"),
        Some(&Value::Bytes(vec![1, 2, 255]))
    );
    assert_eq!(from_value::<B>(v.clone()).unwrap(), b);
    // Vec<u8> reads from bytes as a sequence.
    let raw = Value::Bytes(vec![9, 8]);
    assert_eq!(from_value::<Vec<u8>>(raw).unwrap(), vec![9, 8]);
}

#[test]
fn value_round_trips_through_serde_exactly() {
    let text = r#"[nil true 1 2N 1.5 1.5M 1/3 "s" \c :k/w sym (1 2) #{1} {:a [1], "b" {}} #inst "2024-01-02T03:04:05.678901234-00:00" #uuid "66d96ab4-9834-40db-a3cd-42b361503ab9" #my/tag [1] ##NaN]"#;
    let v = read(text, &ReadOptions::default()).unwrap();
    let back = to_value(&v).unwrap();
    assert_eq!(back.to_string(), text);
    let back: Value = from_value(v.clone()).unwrap();
    assert_eq!(back.to_string(), text);
    let back: Value = from_value_ref(&v).unwrap();
    assert_eq!(back.to_string(), text);
    let with_bytes = Value::Vector(vec![Value::Bytes(vec![1, 2])]);
    assert_eq!(to_value(&with_bytes).unwrap(), with_bytes);
    assert_eq!(from_value::<Value>(with_bytes.clone()).unwrap(), with_bytes);

    // A Value nested in a typed struct.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Event {
        id: Keyword,
        data: Value,
    }
    let e: Event = from_str("{:id :my-app/req, :data {:n #{1 2}, :k :x}}").unwrap();
    assert_eq!(e.data.as_map().unwrap().get_kw("k"), Some(&Value::kw("x")));
    assert!(matches!(
        e.data.as_map().unwrap().get_kw("n"),
        Some(Value::Set(_))
    ));
    assert_eq!(
        to_string(&e).unwrap(),
        "{:id :my-app/req, :data {:n #{1 2}, :k :x}}"
    );
    assert_eq!(serde_json::to_string(&e.id).unwrap(), r#"":my-app/req""#);
    assert_eq!(
        serde_json::from_str::<Keyword>(r#"":a/b""#).unwrap(),
        Keyword::new("a/b")
    );
    let i: Inst = from_str(r#"#inst "2024-01-02T03:04:05.678-00:00""#).unwrap();
    assert_eq!(
        to_string(&i).unwrap(),
        r#"#inst "2024-01-02T03:04:05.678-00:00""#
    );
}

#[test]
fn value_with_serde_json() {
    let v = read(
        r#"{:a [1 2.5 "s"], "b" nil, :c #{:x}, :t #inst "2024-01-02T03:04:05.678-00:00", :r 1/2, :big 99999999999999999999}"#,
        &ReadOptions::default(),
    )
    .unwrap();
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(
        json,
        r#"{":a":[1,2.5,"s"],"b":null,":c":[":x"],":t":"2024-01-02T03:04:05.678-00:00",":r":[1,2],":big":"99999999999999999999"}"#
    );
    let back: Value =
        serde_json::from_str(r#"{"a":[1,2.5,"s",null,true],"n":18446744073709551615}"#).unwrap();
    assert_eq!(
        back.to_string(),
        r#"{"a" [1 2.5 "s" nil true], "n" 18446744073709551615N}"#
    );
}

#[test]
fn maps_with_non_string_keys() {
    let mut m = BTreeMap::new();
    m.insert(1, "one");
    m.insert(2, "two");
    assert_eq!(to_string(&m).unwrap(), r#"{1 "one", 2 "two"}"#);
    assert_eq!(
        from_str::<BTreeMap<i32, String>>(r#"{1 "one", 2 "two"}"#)
            .unwrap()
            .len(),
        2
    );
    let mut roles = HashMap::new();
    roles.insert(Role::Admin, 1);
    let v = to_value(&roles).unwrap();
    let mut expected = Map::new();
    expected.insert(Value::kw("admin"), Value::Int(1));
    assert_eq!(v, Value::Map(expected));
    let i: Inst = Inst::from_millis(5);
    assert_eq!(i.as_millis(), 5);
}

impl Eq for Role {}
impl std::hash::Hash for Role {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
    }
}
