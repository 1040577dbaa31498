// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A token for development chains only
/// @notice Anyone may mint: it exists so that tests and the demo have something
/// to pay with on anvil. Never deploy it where tokens mean money.
contract SealpodTestToken is ERC20 {
    constructor() ERC20("sealpod test token", "SPT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
