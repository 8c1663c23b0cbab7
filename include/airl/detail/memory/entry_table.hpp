// SPDX-License-Identifier: MIT
#pragma once
// The index of one shard: an open-addressing hash table from a key's hash to its entry, linear probing, each
// slot holding the full hash next to the pointer. A lookup usually reads one slot and then the entry it is
// after; a miss stops at the first empty slot. Deletion shifts the following slots back (no tombstones), so
// lookups stay short however many keys come and go. The table does not own the entries.

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "../inlining.hpp"
#include "../prefetch.hpp"

namespace airl::detail {

template <class Item>
class EntryTable {
 public:
  EntryTable() = default;
  EntryTable(const EntryTable&) = delete;
  EntryTable& operator=(const EntryTable&) = delete;

  // Starts loading the slot where a lookup of `hash` begins. Safe without the shard's lock (it reads a
  // published copy of the slot array's address, and a prefetch of a stale address is harmless): callers issue
  // it before locking, so the slot's cache miss overlaps the clock read and the lock.
  void prefetch_slot(std::uint64_t hash) const noexcept {
    const Slot* slots = published_slots_.load(std::memory_order_relaxed);
    if (slots != nullptr) prefetch(slots + (hash & published_mask_.load(std::memory_order_relaxed)));
  }

  // The entry with this hash that `same` accepts, or nullptr. Throws nothing.
  template <class Same>
  AIRL_DETAIL_HOT_INLINE Item* find(std::uint64_t hash, Same&& same) const noexcept {
    if (capacity_ == 0) return nullptr;
    for (std::size_t i = hash & mask(); ; i = (i + 1) & mask()) {
      const Slot& slot = slots_[i];
      if (slot.item == nullptr) return nullptr;
      if (slot.hash == hash) {
        prefetch(reinterpret_cast<const char*>(slot.item) + 64);  // the key bytes after the header
        if (same(*slot.item)) return slot.item;
      }
    }
  }

  // Makes room for one more insert(). Strong guarantee: throws std::bad_alloc and changes nothing.
  void reserve_one() {
    if ((size_ + 1) * 5 > capacity_ * 4) rehash(capacity_ == 0 ? 8 : capacity_ * 2);  // load stays <= 0.8
  }

  // Adds an entry that is not in the table. Requires reserve_one() since the last insert.
  void insert(std::uint64_t hash, Item* item) noexcept {
    std::size_t i = hash & mask();
    while (slots_[i].item != nullptr) i = (i + 1) & mask();
    slots_[i] = Slot{hash, item};
    ++size_;
  }

  // Removes `item` (which has `hash`) from the table. Throws nothing.
  void erase(std::uint64_t hash, const Item* item) noexcept {
    std::size_t hole = hash & mask();
    while (slots_[hole].item != item) hole = (hole + 1) & mask();
    // Backward shift: pull later entries of the run into the hole unless that would put them before their home.
    for (std::size_t next = (hole + 1) & mask(); slots_[next].item != nullptr; next = (next + 1) & mask()) {
      const std::size_t home = slots_[next].hash & mask();
      const bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
      if (stays) continue;
      slots_[hole] = slots_[next];
      hole = next;
    }
    slots_[hole] = Slot{};
    --size_;
  }

  // Calls visit(item) for every entry; visit may erase that entry (and only it) from the table.
  // An entry may be visited twice when an erase shifts it; none is skipped. Throws what visit throws.
  template <class Visit>
  void for_each(Visit&& visit) {
    for (std::size_t i = 0; i < capacity_;) {
      Item* item = slots_[i].item;
      if (item == nullptr) {
        ++i;
        continue;
      }
      visit(*item);
      if (slots_[i].item == item) ++i;  // else it was erased and another entry moved into slot i
    }
  }

  // Gives memory back after a mass expiry: halves the table while it is at most 1/8 full. Best effort.
  void compact() noexcept {
    if (capacity_ <= 8 || size_ * 8 > capacity_) return;
    try {
      rehash(std::max<std::size_t>(8, std::bit_ceil(size_ * 2 + 1)));
    } catch (const std::bad_alloc&) {
    }
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  struct Slot {
    std::uint64_t hash = 0;
    Item* item = nullptr;  // nullptr: empty
  };

  std::size_t mask() const noexcept { return capacity_ - 1; }

  void rehash(std::size_t capacity) {
    auto slots = std::make_unique<Slot[]>(capacity);
    std::swap(slots, slots_);
    const std::size_t old_capacity = std::exchange(capacity_, capacity);
    size_ = 0;
    for (std::size_t i = 0; i < old_capacity; ++i) {
      if (slots[i].item != nullptr) insert(slots[i].hash, slots[i].item);
    }
    published_mask_.store(mask(), std::memory_order_relaxed);
    published_slots_.store(slots_.get(), std::memory_order_relaxed);
  }

  std::unique_ptr<Slot[]> slots_;
  std::size_t capacity_ = 0;  // a power of two, or 0
  std::size_t size_ = 0;
  std::atomic<const Slot*> published_slots_{nullptr};  // for prefetch_slot() only
  std::atomic<std::size_t> published_mask_{0};
};

}  // namespace airl::detail
