//! SipHash-2-4 with its 128-bit output (Aumasson and Bernstein's keyed
//! pseudo-random function), streaming: the keyed hash behind [`KeyId`].
//!
//! Written out here because no crate in the tree offers the 128-bit
//! variant (std's `SipHasher` is 64-bit and deprecated, `RandomState`'s
//! keys cannot be set). Checked against the reference test vectors.
//!
//! [`KeyId`]: super::KeyId

/// A SipHash-2-4-128 computation in progress.
#[derive(Clone)]
pub(crate) struct Sip128 {
    v: [u64; 4],
    /// Bytes not yet compressed (the low `ntail` bytes, little-endian).
    tail: u64,
    ntail: usize,
    len: u64,
}

impl Sip128 {
    pub(crate) fn new(key: [u64; 2]) -> Self {
        let [k0, k1] = key;
        Sip128 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                // The 128-bit variant starts with v1 ^ 0xee.
                k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    #[inline]
    fn round(&mut self) {
        let v = &mut self.v;
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.round();
        self.v[0] ^= m;
    }

    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        if self.ntail > 0 {
            while self.ntail < 8 {
                let Some((&b, rest)) = bytes.split_first() else {
                    return;
                };
                self.tail |= u64::from(b) << (8 * self.ntail);
                self.ntail += 1;
                bytes = rest;
            }
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.compress(u64::from_le_bytes(b));
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(b) << (8 * i);
        }
        self.ntail = words.remainder().len();
    }

    pub(crate) fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    pub(crate) fn finish(mut self) -> u128 {
        let m = self.tail | ((self.len & 0xff) << 56);
        self.compress(m);
        self.v[2] ^= 0xee;
        for _ in 0..4 {
            self.round();
        }
        let lo = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        self.v[1] ^= 0xdd;
        for _ in 0..4 {
            self.round();
        }
        let hi = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        u128::from(lo) | (u128::from(hi) << 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key 00 01 … 0f, as in the reference implementation's vectors.
    const KEY: [u64; 2] = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    fn sip(bytes: &[u8]) -> [u8; 16] {
        let mut h = Sip128::new(KEY);
        h.write(bytes);
        h.finish().to_le_bytes()
    }

    /// `vectors_sip128` of the reference implementation's `vectors.h`
    /// (veorq/SipHash): the messages 00 01 … of these lengths.
    #[test]
    fn reference_vectors() {
        let msg: Vec<u8> = (0u8..64).collect();
        let cases = [
            (0, "a3817f04ba25a8e66df67214c7550293"),
            (1, "da87c1d86b99af44347659119b22fc45"),
            (2, "8177228da4a45dc7fca38bdef60affe4"),
            (7, "a1f1ebbed8dbc153c0b84aa61ff08239"),
            (8, "3b62a9ba6258f5610f83e264f31497b4"),
            (15, "5493e99933b0a8117e08ec0f97cfc3d9"),
            (16, "6ee2a4ca67b054bbfd3315bf85230577"),
            (63, "5150d1772f50834a503e069a973fbd7c"),
        ];
        for (len, want) in cases {
            let got: String = sip(&msg[..len])
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, want, "length {len}");
        }
    }

    /// Streaming in pieces gives what one write gives.
    #[test]
    fn pieces_equal_one_write() {
        let msg: Vec<u8> = (0u8..64).collect();
        for len in 0..msg.len() {
            for cut in 0..=len {
                let mut h = Sip128::new(KEY);
                h.write(&msg[..cut]);
                h.write(&msg[cut..len]);
                assert_eq!(h.finish().to_le_bytes(), sip(&msg[..len]), "{cut}/{len}");
            }
        }
    }
}
