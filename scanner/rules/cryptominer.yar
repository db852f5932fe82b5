// Cryptocurrency miners: xmrig (and its forks) configuration files and binaries.

rule iw_xmrig_config
{
    meta:
        id = "IW-MAL-XMRIG"
        title = "Cryptocurrency miner (xmrig-like) configuration or binary"
        severity = "critical"
        description = "A miner configuration: an xmrig setting (donate-level, randomx, pools, algo) together with a stratum pool URL or a well-known mining pool host"

    strings:
        $cfg_donate = "\"donate-level\""
        $cfg_randomx = /"randomx"\s*:/
        $cfg_pools = /"pools"\s*:\s*\[/
        $cfg_algo = /"algo"\s*:\s*"(rx|cn|cryptonight|randomx|argon2|kawpow|ghostrider)/ nocase
        $cfg_coin = /"coin"\s*:\s*"(monero|xmr)"/ nocase

        $url_stratum = /stratum\+(tcp|ssl|tls):\/\//

        $host_1 = "supportxmr.com" nocase
        $host_2 = "moneroocean.stream" nocase
        $host_3 = "minexmr.com" nocase
        $host_4 = "nanopool.org" nocase
        $host_5 = "xmrpool.eu" nocase
        $host_6 = "hashvault.pro" nocase
        $host_7 = "c3pool.com" nocase
        $host_8 = "herominers.com" nocase
        $host_9 = "2miners.com" nocase
        $host_10 = "f2pool.com" nocase
        $host_11 = "unmineable.com" nocase
        $host_12 = "nicehash.com" nocase
        $host_13 = "minergate.com" nocase
        $host_14 = "monerohash.com" nocase
        $host_15 = "dwarfpool.com" nocase

    condition:
        not iw_binary_executable and
        any of ($cfg_*) and ($url_stratum or any of ($host_*))
}

rule iw_xmrig_binary
{
    meta:
        id = "IW-MAL-XMRIG"
        title = "Cryptocurrency miner (xmrig-like) configuration or binary"
        severity = "critical"
        description = "An executable with two or more miner strings: xmrig, cryptonight, randomx, --donate-level, a stratum URL, the xmrig donation host"

    strings:
        $xmrig = "xmrig" nocase fullword
        $cryptonight = "cryptonight" nocase fullword
        $randomx = "randomx" nocase fullword
        $donate = "donate-level"
        $donate_host = "donate.v2.xmrig.com" nocase
        $stratum = /stratum\+(tcp|ssl|tls):\/\//

    condition:
        iw_binary_executable and 2 of them
}
