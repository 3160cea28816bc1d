//! The twelve venue ids used everywhere (config, log, files, metrics), and their one-byte codes
//! in the log. Codes are part of the on-disk format: never renumber, only append.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Venue {
    BinanceSpot = 1,
    BinanceUsdm = 2,
    BybitSpot = 3,
    BybitLinear = 4,
    OkxSpot = 5,
    OkxSwap = 6,
    KucoinSpot = 7,
    KucoinFutures = 8,
    GateSpot = 9,
    GateFutures = 10,
    PhemexSpot = 11,
    PhemexPerp = 12,
}

pub const ALL: [Venue; 12] = [
    Venue::BinanceSpot,
    Venue::BinanceUsdm,
    Venue::BybitSpot,
    Venue::BybitLinear,
    Venue::OkxSpot,
    Venue::OkxSwap,
    Venue::KucoinSpot,
    Venue::KucoinFutures,
    Venue::GateSpot,
    Venue::GateFutures,
    Venue::PhemexSpot,
    Venue::PhemexPerp,
];

impl Venue {
    pub fn id(self) -> &'static str {
        match self {
            Venue::BinanceSpot => "binance-spot",
            Venue::BinanceUsdm => "binance-usdm",
            Venue::BybitSpot => "bybit-spot",
            Venue::BybitLinear => "bybit-linear",
            Venue::OkxSpot => "okx-spot",
            Venue::OkxSwap => "okx-swap",
            Venue::KucoinSpot => "kucoin-spot",
            Venue::KucoinFutures => "kucoin-futures",
            Venue::GateSpot => "gate-spot",
            Venue::GateFutures => "gate-futures",
            Venue::PhemexSpot => "phemex-spot",
            Venue::PhemexPerp => "phemex-perp",
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Venue> {
        ALL.get((code as usize).wrapping_sub(1)).copied()
    }

    pub fn from_id(id: &str) -> Option<Venue> {
        Self::from_id_bytes(id.as_bytes())
    }

    pub fn from_id_bytes(id: &[u8]) -> Option<Venue> {
        ALL.iter().copied().find(|v| v.id().as_bytes() == id)
    }

    /// Parses a venue id, with an error that lists the valid ones.
    pub fn parse(id: &str) -> crate::Result<Venue> {
        Venue::from_id(id).ok_or_else(|| {
            crate::Error::InvalidInput(format!(
                "unknown venue {id:?}; the venues are: {}",
                ALL.iter().map(|v| v.id()).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_ids_round_trip() {
        for v in ALL {
            assert_eq!(Venue::from_code(v.code()), Some(v));
            assert_eq!(Venue::from_id(v.id()), Some(v));
        }
        assert_eq!(Venue::from_code(0), None);
        assert_eq!(Venue::from_code(13), None);
        assert!(Venue::parse("binance").is_err());
    }
}
