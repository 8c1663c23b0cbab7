// SPDX-License-Identifier: MIT
#pragma once
// The request ids of one window log: id -> the position of the entry admitted with it. Made only for logs
// that see ids. Entries leave a log oldest first (and are taken back newest first), so the ids live in a queue
// of records in admission order ([hash][sequence number][length][bytes][record size], in one byte buffer) and
// an open-addressing table of (hash, record) finds them; positions are sequence numbers (the oldest live entry
// is first_seq). Both buffers keep their capacity as entries come and go, so a log whose traffic is steady
// allocates nothing per id; after a burst they shrink once the live ids are 8 times fewer than their room.
// A decision hashes its id once (hash_of) and passes the hash to find() and remember().

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "../key_hash.hpp"
#include "../prefetch.hpp"
#include "../transparent_hash.hpp"

namespace airl::detail {

// The records' bytes: a plain growable buffer (std::vector<char>'s insert cost a general-purpose call per
// append, about a tenth of an id's cost). Appends stay within reserved room; the front is given back
// in one move when the queue has drained far enough.
class RecordBytes {
 public:
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  char* data() noexcept { return data_.get(); }
  const char* data() const noexcept { return data_.get(); }
  // Room for `total` bytes. Strong guarantee: throws std::bad_alloc.
  void reserve(std::size_t total) {
    if (total <= capacity_) return;
    std::unique_ptr<char[]> grown(new char[total]);
    if (size_ != 0) std::memcpy(grown.get(), data_.get(), size_);
    data_ = std::move(grown);
    capacity_ = total;
  }
  void append(const void* bytes, std::size_t count) noexcept {  // requires the room
    std::memcpy(data_.get() + size_, bytes, count);
    size_ += count;
  }
  void truncate(std::size_t size) noexcept { size_ = size; }
  void drop_front(std::size_t count) noexcept {
    if (count != size_) std::memmove(data_.get(), data_.get() + count, size_ - count);
    size_ -= count;
  }
  // A copy of bytes [from, size()) with room for `room` bytes. Throws std::bad_alloc.
  RecordBytes tail(std::size_t from, std::size_t room) const {
    RecordBytes kept;
    kept.reserve(std::max(room, size_ - from));
    kept.append(data_.get() + from, size_ - from);
    return kept;
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

class RequestIdIndex {
 public:
  // The hash find() and remember() take for `id`: never 0, which marks an empty slot. The mark is the top bit,
  // not the bottom one, because the low bits pick the home slot. Throws nothing.
  static std::uint64_t hash_of(std::string_view id) noexcept { return hash_part(transparent_hash_seed(), id) | used_bit; }

  // Position (0 = oldest live entry) of the entry admitted with `id`, if it is among the `live` entries.
  std::optional<std::size_t> find(std::string_view id, std::size_t live) const noexcept {
    return find(id, hash_of(id), live);
  }
  // The same, given hash_of(id).
  std::optional<std::size_t> find(std::string_view id, std::uint64_t hash, std::size_t live) const noexcept {
    const Slot* slot = lookup(hash, id);
    if (slot == nullptr) return std::nullopt;
    const std::uint64_t seq = header_at(slot->record).seq;  // on the line the id's bytes were compared on
    if (seq < first_seq_ || seq - first_seq_ >= live) return std::nullopt;
    return static_cast<std::size_t>(seq - first_seq_);
  }

  // Indexes `id` for the entry about to be appended at `position`. An id already indexed keeps its first
  // entry. Strong guarantee: throws std::bad_alloc and changes nothing.
  void remember(std::string_view id, std::size_t position) { remember(id, hash_of(id), position); }
  // The same, given hash_of(id).
  void remember(std::string_view id, std::uint64_t hash, std::size_t position) {
    if (lookup(hash, id) == nullptr) remember_new(id, hash, position);
  }
  // The same for an id find() has just not found (a decision checked it under the same lock): no second
  // lookup. Strong guarantee: throws std::bad_alloc and changes nothing.
  void remember_new(std::string_view id, std::uint64_t hash, std::size_t position) {
    if ((used_ + 1) * 4 > slots_.size() * 3) grow_table();  // load stays <= 3/4
    const auto size = static_cast<std::uint32_t>(header + id.size() + trailer);
    if (bytes_.size() + size > bytes_.capacity()) bytes_.reserve(std::max(bytes_.size() + size, 2 * bytes_.capacity()));
    // From here on nothing allocates.
    const std::uint64_t record = base_ + bytes_.size();
    const Header head{hash, first_seq_ + position, static_cast<std::uint32_t>(id.size())};
    bytes_.append(&head, header);
    bytes_.append(id.data(), id.size());
    bytes_.append(&size, trailer);
    insert(Slot{hash, record});
  }

  // The `count` oldest entries left the log: their ids are forgotten. Throws nothing.
  void drop_oldest(std::size_t count) noexcept {
    first_seq_ += count;
    while (head_ < bytes_.size()) {
      const Header head = header_at(base_ + head_);
      if (head.seq >= first_seq_) break;
      if (head.hash != forgotten) erase(head.hash, base_ + head_);
      head_ += header + head.size + trailer;
    }
    if (head_ == bytes_.size() || head_ * 2 > bytes_.capacity()) {  // reuse the front: no allocation
      bytes_.drop_front(head_);
      base_ += head_;
      head_ = 0;
    }
    shrink_if_sparse();
  }

  // The entry at `position` (the newest) was taken back: its id, if it was indexed there, is forgotten.
  void undo(std::size_t position) noexcept {
    if (bytes_.size() == head_) return;
    std::uint32_t size;
    std::memcpy(&size, bytes_.data() + bytes_.size() - trailer, trailer);
    const std::uint64_t record = base_ + bytes_.size() - size;
    const Header head = header_at(record);
    if (head.seq != first_seq_ + position) return;  // that entry had no id: the newest record is older
    if (head.hash != forgotten) erase(head.hash, record);
    bytes_.truncate(bytes_.size() - size);
  }

  // The entry admitted with `id` stays but no longer answers to it (a refund): the id may be admitted again.
  // Its record stays queued, marked, until its entry leaves. Throws nothing.
  void forget(std::string_view id) noexcept {
    const std::uint64_t hash = hash_of(id);
    const Slot* slot = lookup(hash, id);
    if (slot == nullptr) return;
    const std::uint64_t record = slot->record;
    erase(hash, record);
    std::memcpy(bytes_.data() + (record - base_), &forgotten, sizeof forgotten);  // the header's hash
  }

  // Starts loading the oldest record (the next to leave) and the end of the queue (where the next is
  // appended): both usually miss the cache, and neither depends on the other. Throws nothing.
  void prefetch_ends() const noexcept {
    detail::prefetch(bytes_.data() + head_);
    detail::prefetch_for_write(bytes_.data() + bytes_.size());
  }

  bool empty() const noexcept { return used_ == 0; }
  // Bytes held for the ids (table and records), capacity included.
  std::size_t memory_bytes() const noexcept { return slots_.capacity() * sizeof(Slot) + bytes_.capacity(); }

 private:
  struct Header {
    std::uint64_t hash;
    std::uint64_t seq;
    std::uint32_t size;
  };
  static constexpr std::size_t header = sizeof(std::uint64_t) * 2 + sizeof(std::uint32_t);
  static constexpr std::size_t trailer = sizeof(std::uint32_t);
  static constexpr std::uint64_t used_bit = std::uint64_t{1} << 63;
  static constexpr std::uint64_t forgotten = 0;  // a record's hash once forget() unindexed it (hashes are not 0)
  // 16 bytes: a lookup's probes read few cache lines. The entry's sequence number is in its record.
  struct Slot {
    std::uint64_t hash = 0;  // 0: empty (hashes never are)
    std::uint64_t record = 0;  // where the record starts, counted from the first byte ever queued
  };
  std::size_t mask() const noexcept { return slots_.size() - 1; }

  Header header_at(std::uint64_t record) const noexcept {
    Header head;
    std::memcpy(&head, bytes_.data() + (record - base_), header);
    return head;
  }

  bool same_id(std::uint64_t record, std::string_view id) const noexcept {
    std::uint32_t size;
    std::memcpy(&size, bytes_.data() + (record - base_) + 2 * sizeof(std::uint64_t), sizeof size);
    return size == id.size() && same_bytes(bytes_.data() + (record - base_) + header, id.data(), id.size());
  }

  const Slot* lookup(std::uint64_t hash, std::string_view id) const noexcept {
    if (slots_.empty()) return nullptr;
    for (std::size_t i = hash & mask();; i = (i + 1) & mask()) {
      const Slot& slot = slots_[i];
      if (slot.hash == 0) return nullptr;
      if (slot.hash == hash && same_id(slot.record, id)) return &slot;
    }
  }

  void insert(const Slot& slot) noexcept {
    std::size_t i = slot.hash & mask();
    while (slots_[i].hash != 0) i = (i + 1) & mask();
    slots_[i] = slot;
    ++used_;
  }

  // Removes the slot of the record at `record` (which has `hash`), shifting its run back (no tombstones).
  void erase(std::uint64_t hash, std::uint64_t record) noexcept {
    std::size_t hole = hash & mask();
    while (slots_[hole].record != record || slots_[hole].hash != hash) hole = (hole + 1) & mask();
    for (std::size_t next = (hole + 1) & mask(); slots_[next].hash != 0; next = (next + 1) & mask()) {
      const std::size_t home = slots_[next].hash & mask();
      const bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
      if (stays) continue;
      slots_[hole] = slots_[next];
      hole = next;
    }
    slots_[hole] = Slot{};
    --used_;
  }

  // After a burst: memory follows the live ids again once they are 8 times fewer than the room kept for them
  // (growth waits for 3/4 full, so steady traffic never shrinks and grows in turn). Failing to allocate the
  // smaller copy keeps the larger one.
  void shrink_if_sparse() noexcept {
    constexpr std::size_t least = 64;
    try {
      if (slots_.size() > least && used_ * 8 < slots_.size()) {
        std::size_t size = least;
        while (size < used_ * 2) size *= 2;
        std::vector<Slot> old(size);
        old.swap(slots_);
        used_ = 0;
        for (const Slot& slot : old) {
          if (slot.hash != 0) insert(slot);
        }
      }
      const std::size_t live = bytes_.size() - head_;
      if (bytes_.capacity() > 4096 && live * 8 < bytes_.capacity()) {
        RecordBytes kept = bytes_.tail(head_, std::max<std::size_t>(2 * live, 256));
        base_ += head_;
        head_ = 0;
        bytes_ = std::move(kept);
      }
    } catch (...) {  // std::bad_alloc: keep the room we have
    }
  }

  void grow_table() {
    std::vector<Slot> old(std::max<std::size_t>(8, slots_.size() * 2));
    old.swap(slots_);
    used_ = 0;
    for (const Slot& slot : old) {
      if (slot.hash != 0) insert(slot);
    }
  }

  std::uint64_t first_seq_ = 0;  // sequence number of the log's oldest live entry
  RecordBytes bytes_;            // the records; bytes_[head_] is the oldest still indexed
  std::size_t head_ = 0;
  std::uint64_t base_ = 0;       // how many bytes were queued before bytes_[0]
  std::vector<Slot> slots_;      // a power of two, or empty
  std::size_t used_ = 0;
};

}  // namespace airl::detail
