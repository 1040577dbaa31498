// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title sealpod payment channels
/// @notice Unidirectional ERC-20 channels from a publisher to a provider, one
/// per pod. The publisher signs EIP-712 vouchers for a cumulative amount; the
/// provider (or anyone on its behalf) claims the difference to what was already
/// paid out. The publisher gets the unclaimed rest back only after an unlock
/// delay, which the provider chose to accept when the channel was opened, so
/// the provider always has time to claim its latest voucher.
///
/// Why not Apocryph's `Payment.sol`: there the provider could withdraw the
/// whole deposit at any time (no vouchers), and a closed channel was deleted so
/// the same (publisher, provider, pod) could reopen with its payout counter at
/// zero. Here every channel gets an id from a counter that never repeats, and a
/// closed channel stays closed: an old voucher pays nothing anywhere else.
contract SealpodChannels is EIP712 {
    using SafeERC20 for IERC20;

    struct Channel {
        address publisher;
        address provider;
        IERC20 token;
        bytes32 podId;
        uint256 deposited;
        uint256 claimed;
        uint64 unlockDelay;
        /// When the publisher may withdraw; 0 while no unlock is pending.
        uint64 unlockAt;
        bool closed;
    }

    /// @dev keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)")
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)");

    /// Channels opened so far; part of every channel id.
    uint256 public channelCount;
    mapping(bytes32 => Channel) private channels;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed publisher,
        address indexed provider,
        address token,
        bytes32 podId,
        uint256 amount,
        uint64 unlockDelay
    );
    event ToppedUp(bytes32 indexed channelId, uint256 amount, uint256 deposited);
    event Claimed(bytes32 indexed channelId, uint256 amount, uint256 claimed);
    event UnlockStarted(bytes32 indexed channelId, uint64 unlockAt);
    event Withdrawn(bytes32 indexed channelId, uint256 refunded);

    error UnknownChannel(bytes32 channelId);
    error ChannelClosed(bytes32 channelId);
    error NotPublisher(bytes32 channelId);
    error ZeroAddress();
    error ZeroAmount();
    error BadVoucherSignature(bytes32 channelId);
    error NothingToClaim(bytes32 channelId, uint256 cumulativeAmount, uint256 claimed);
    error StillLocked(bytes32 channelId, uint64 unlockAt);

    constructor() EIP712("sealpod", "1") {}

    /// @notice Opens a channel and deposits `amount` of `token` (approved beforehand).
    function open(address provider, IERC20 token, bytes32 podId, uint256 amount, uint64 unlockDelay)
        external
        returns (bytes32 channelId)
    {
        if (provider == address(0) || address(token) == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        channelCount += 1;
        channelId = keccak256(abi.encode(block.chainid, address(this), channelCount, msg.sender, provider, token, podId));
        channels[channelId] = Channel({
            publisher: msg.sender,
            provider: provider,
            token: token,
            podId: podId,
            deposited: amount,
            claimed: 0,
            unlockDelay: unlockDelay,
            unlockAt: 0,
            closed: false
        });
        emit ChannelOpened(channelId, msg.sender, provider, address(token), podId, amount, unlockDelay);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Adds funds (from the caller) and cancels a pending unlock.
    function topUp(bytes32 channelId, uint256 amount) external {
        Channel storage c = live(channelId);
        if (amount == 0) revert ZeroAmount();
        c.deposited += amount;
        c.unlockAt = 0;
        emit ToppedUp(channelId, amount, c.deposited);
        c.token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Pays the provider what the publisher's voucher for a cumulative
    /// amount adds to what was already claimed, up to the deposit. Anyone may
    /// submit it: the tokens only ever go to the channel's provider.
    function claim(bytes32 channelId, uint256 cumulativeAmount, bytes calldata signature)
        external
        returns (uint256 paid)
    {
        Channel storage c = live(channelId);
        address signer = ECDSA.recover(voucherDigest(channelId, cumulativeAmount), signature);
        if (signer != c.publisher) revert BadVoucherSignature(channelId);
        uint256 payable_ = cumulativeAmount < c.deposited ? cumulativeAmount : c.deposited;
        if (payable_ <= c.claimed) revert NothingToClaim(channelId, cumulativeAmount, c.claimed);
        paid = payable_ - c.claimed;
        c.claimed = payable_;
        emit Claimed(channelId, paid, c.claimed);
        c.token.safeTransfer(c.provider, paid);
    }

    /// @notice The publisher starts the unlock timer; it may withdraw the rest
    /// `unlockDelay` seconds later, unless it tops up in between.
    function startUnlock(bytes32 channelId) external returns (uint64 unlockAt) {
        Channel storage c = live(channelId);
        if (msg.sender != c.publisher) revert NotPublisher(channelId);
        unlockAt = uint64(block.timestamp) + c.unlockDelay;
        c.unlockAt = unlockAt;
        emit UnlockStarted(channelId, unlockAt);
    }

    /// @notice After the unlock delay, returns the unclaimed rest to the
    /// publisher and closes the channel for good.
    function withdraw(bytes32 channelId) external returns (uint256 refunded) {
        Channel storage c = live(channelId);
        if (msg.sender != c.publisher) revert NotPublisher(channelId);
        if (c.unlockAt == 0 || block.timestamp < c.unlockAt) revert StillLocked(channelId, c.unlockAt);
        refunded = c.deposited - c.claimed;
        c.closed = true;
        emit Withdrawn(channelId, refunded);
        if (refunded > 0) c.token.safeTransfer(c.publisher, refunded);
    }

    /// @notice A channel as stored (all zero for an unknown id).
    function channel(bytes32 channelId) external view returns (Channel memory) {
        return channels[channelId];
    }

    /// @notice The EIP-712 digest the publisher signs for a voucher.
    function voucherDigest(bytes32 channelId, uint256 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount)));
    }

    function live(bytes32 channelId) private view returns (Channel storage c) {
        c = channels[channelId];
        if (c.publisher == address(0)) revert UnknownChannel(channelId);
        if (c.closed) revert ChannelClosed(channelId);
    }
}
