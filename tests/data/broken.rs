/// Fine before the damage.
pub fn clean_before(x: u32) -> u32 {
    x + 1
}

fn broken_params(a: u32, { let y = ; }

pub struct Clean {
    value: u8,
}

struct Broken { a: u8,, }

impl Clean {
    fn method(&self) -> u8 { if { } }
}

fn clean_after() {}
