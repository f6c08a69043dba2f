// The plan (plan.hpp) encoded as one libnftnl batch, sent over the libmnl socket that owns
// the table. Each helper below emits the expressions nft itself emits for the same text, so
// `nft list table inet tprosshy` prints what render() prints.
#include "nft/netlink.hpp"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <map>
#include <system_error>
#include <vector>

#include "nft/plan.hpp"

namespace tprosshy::nft {

namespace {

template <auto F>
struct deleter {
  template <class T>
  void operator()(T* p) const {
    F(p);
  }
};
template <class T, auto F>
using c_ptr = std::unique_ptr<T, deleter<F>>;

void close_socket(mnl_socket* s) { mnl_socket_close(s); }
void free_udata(nftnl_udata_buf* b) { nftnl_udata_buf_free(b); }
using socket_ptr = c_ptr<mnl_socket, close_socket>;
using table_ptr = c_ptr<nftnl_table, nftnl_table_free>;
using chain_ptr = c_ptr<nftnl_chain, nftnl_chain_free>;
using set_ptr = c_ptr<nftnl_set, nftnl_set_free>;
using rule_ptr = c_ptr<nftnl_rule, nftnl_rule_free>;
using udata_ptr = c_ptr<nftnl_udata_buf, free_udata>;
using obj_ptr = c_ptr<nftnl_obj, nftnl_obj_free>;

template <class T>
T* check_alloc(T* p) {
  if (!p) throw std::bad_alloc();
  return p;
}

[[noreturn]] void fail(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "nftables: " + what);
}

// nft's datatype ids (nftables/include/datatype.h), so `nft list` prints the keys as
// addresses.
constexpr uint32_t type_ipv4_addr = 7, type_ipv6_addr = 8;
constexpr uint32_t byteorder_big_endian = 2;
constexpr size_t max_elements_per_message = 512;  // keeps the nested attribute below 64 KiB

std::vector<uint8_t> key_bytes(const net::address& a) {
  if (a.is_v4()) {
    auto b = a.to_v4().to_bytes();
    return {b.begin(), b.end()};
  }
  auto b = a.to_v6().to_bytes();
  return {b.begin(), b.end()};
}

// --- one helper per expression -------------------------------------------------------

nftnl_expr* expr(nftnl_rule* r, const char* name) {
  auto* e = check_alloc(nftnl_expr_alloc(name));
  nftnl_rule_add_expr(r, e);  // the rule owns it from here
  return e;
}

void add_meta(nftnl_rule* r, uint32_t key) {
  auto* e = expr(r, "meta");
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
}

void add_cmp(nftnl_rule* r, const void* data, uint32_t len) {
  auto* e = expr(r, "cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
}

void add_payload(nftnl_rule* r, uint32_t base, uint32_t offset, uint32_t len) {
  auto* e = expr(r, "payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
}

void add_lookup(nftnl_rule* r, const std::string& set, uint32_t set_id) {
  auto* e = expr(r, "lookup");
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
  nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set.c_str());
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set_id);
}

// `ip daddr` in an inet table: first make sure the packet is IPv4 (as nft does).
void add_daddr_load(nftnl_rule* r, plan::family f) {
  uint8_t nfproto = f == plan::family::v4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
  add_meta(r, NFT_META_NFPROTO);
  add_cmp(r, &nfproto, sizeof nfproto);
  if (f == plan::family::v4)
    add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);  // iphdr.daddr
  else
    add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 24, 16);  // ipv6hdr.daddr
}

void add_fib_type(nftnl_rule* r, uint32_t rtn) {
  auto* e = expr(r, "fib");
  nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
  nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
  nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
  add_cmp(r, &rtn, sizeof rtn);
}

// `ip daddr NET/LEN`: the address masked to the prefix, compared with the network.
void add_daddr_net(nftnl_rule* r, const net::prefix& p) {
  const bool v4 = p.network.is_v4();
  add_daddr_load(r, v4 ? plan::family::v4 : plan::family::v6);
  const auto net = key_bytes(p.network);
  std::vector<uint8_t> mask(net.size(), 0);
  for (unsigned bit = 0; bit < p.length; ++bit) mask[bit / 8] |= uint8_t(0x80 >> (bit % 8));
  std::vector<uint8_t> zero(net.size(), 0), masked(net.size());
  for (std::size_t k = 0; k < net.size(); ++k) masked[k] = net[k] & mask[k];
  auto* bw = expr(r, "bitwise");
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_LEN, static_cast<uint32_t>(mask.size()));
  nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_MASK, mask.data(), static_cast<uint32_t>(mask.size()));
  nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_XOR, zero.data(), static_cast<uint32_t>(zero.size()));
  add_cmp(r, masked.data(), static_cast<uint32_t>(masked.size()));
}

// `icmpv6 type T` in an inet table, with the dependencies nft adds itself.
void add_icmpv6_type(nftnl_rule* r, uint8_t type) {
  uint8_t nfproto = NFPROTO_IPV6, proto = IPPROTO_ICMPV6;
  add_meta(r, NFT_META_NFPROTO);
  add_cmp(r, &nfproto, sizeof nfproto);
  add_meta(r, NFT_META_L4PROTO);
  add_cmp(r, &proto, sizeof proto);
  add_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
  add_cmp(r, &type, sizeof type);
}

// `ct status dnat`: the status bit set when a nat rule changed the destination.
void add_ct_dnat(nftnl_rule* r) {
  auto* ct = expr(r, "ct");
  nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_KEY, NFT_CT_STATUS);
  nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_DREG, NFT_REG_1);
  auto* bw = expr(r, "bitwise");
  uint32_t mask = IPS_DST_NAT, zero = 0;
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_LEN, sizeof mask);
  nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_MASK, &mask, sizeof mask);
  nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_XOR, &zero, sizeof zero);
  auto* cmp = expr(r, "cmp");
  nftnl_expr_set_u32(cmp, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
  nftnl_expr_set_u32(cmp, NFTNL_EXPR_CMP_OP, NFT_CMP_NEQ);
  nftnl_expr_set(cmp, NFTNL_EXPR_CMP_DATA, &zero, sizeof zero);
}

// nft's `reject` in an inet table: ICMP(v6) port unreachable; `reject with tcp reset`; or
// `reject with icmpx admin-prohibited`.
void add_reject(nftnl_rule* r, const plan::reject& how) {
  auto* e = expr(r, "reject");
  if (how.icmp && !how.tcp_reset && !how.prohibited) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMP_UNREACH);
    nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE,
                      how.icmp == plan::family::v4 ? ICMP_PORT_UNREACH : ICMP6_DST_UNREACH_NOPORT);
    return;
  }
  nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE,
                     how.tcp_reset ? NFT_REJECT_TCP_RST : NFT_REJECT_ICMPX_UNREACH);
  nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE,
                    how.tcp_reset    ? 0
                    : how.prohibited ? NFT_REJECT_ICMPX_ADMIN_PROHIBITED
                                     : NFT_REJECT_ICMPX_PORT_UNREACH);
}

void add_verdict(nftnl_rule* r, int verdict, const char* chain = nullptr) {
  auto* e = expr(r, "immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(verdict));
  if (chain) nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, chain);
}

void add_redirect(nftnl_rule* r, uint16_t port) {
  auto* imm = expr(r, "immediate");
  uint16_t be = htons(port);
  nftnl_expr_set_u32(imm, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
  nftnl_expr_set(imm, NFTNL_EXPR_IMM_DATA, &be, sizeof be);
  auto* e = expr(r, "redir");
  nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
}

// --- the batch -------------------------------------------------------------------------

// Messages of one transaction, each remembered by sequence number so an error can say
// which object the kernel refused.
class batch {
 public:
  explicit batch(uint32_t& seq) : seq_(seq) {
    nftnl_batch_begin(room(), seq_++);
    commit_untracked();
  }

  // Starts a message; the caller fills its payload, then calls done().
  nlmsghdr* start(uint16_t type, uint16_t flags, std::string what) {
    what_[seq_] = std::move(what);
    return nftnl_nlmsg_build_hdr(room(), type, NFPROTO_INET, flags | NLM_F_ACK, seq_++);
  }
  void done(nlmsghdr* h) { used_ += NLMSG_ALIGN(h->nlmsg_len); }

  std::vector<char>& finish() {
    nftnl_batch_end(room(), seq_++);
    commit_untracked();
    buf_.resize(used_);
    return buf_;
  }
  const std::map<uint32_t, std::string>& what() const { return what_; }

 private:
  // Every message we build is far below this; libnftnl writes without bounds checks.
  static constexpr size_t max_message = 128 * 1024;
  char* room() {
    buf_.resize(used_ + max_message);
    return buf_.data() + used_;
  }
  void commit_untracked() {
    used_ += NLMSG_ALIGN(reinterpret_cast<nlmsghdr*>(buf_.data() + used_)->nlmsg_len);
  }
  uint32_t& seq_;
  std::vector<char> buf_;
  size_t used_ = 0;
  std::map<uint32_t, std::string> what_;
};

struct ack_state {
  const std::map<uint32_t, std::string>* what;
  size_t acked = 0;
  int error = 0;
  uint32_t error_seq = 0;
};

int on_error_message(const nlmsghdr* h, void* data) {
  auto* st = static_cast<ack_state*>(data);
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return MNL_CB_OK;
  auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(h));
  if (!st->what->contains(h->nlmsg_seq)) return MNL_CB_OK;  // a late answer to an old request
  ++st->acked;
  if (err->error != 0 && st->error == 0) {
    st->error = -err->error;
    st->error_seq = h->nlmsg_seq;
  }
  return MNL_CB_OK;
}

int ignore_message(const nlmsghdr*, void*) { return MNL_CB_OK; }

std::string table_desc(const std::string& name) { return "table inet " + name; }

}  // namespace

struct netlink::impl {
  socket_ptr sock;
  uint32_t portid = 0;
  uint32_t seq = static_cast<uint32_t>(time(nullptr));
  std::string table;  // installed table's name; empty when none
  std::vector<std::string> learned_profiles;
  bool locked = false;  // the lock table is this ruleset's

  // Sends the messages and waits for every ACK. The kernel handles a batch inside
  // sendmsg(), so the answers are queued by the time sendto() returns; the poll timeout
  // only bounds a kernel that would not answer at all.
  void talk(std::vector<char>& buf, const std::map<uint32_t, std::string>& what) {
    int fd = mnl_socket_get_fd(sock.get());
    int size = static_cast<int>(buf.size()) + 4096;
    if (size > 200 * 1024) setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    if (mnl_socket_sendto(sock.get(), buf.data(), buf.size()) < 0) fail(errno, "sending the batch");
    ack_state st{&what};
    std::vector<char> rx(64 * 1024);
    mnl_cb_t ctl[NLMSG_MIN_TYPE] = {};
    ctl[NLMSG_ERROR] = on_error_message;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (st.acked < what.size()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{fd, POLLIN, 0};
      int n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      auto got = mnl_socket_recvfrom(sock.get(), rx.data(), rx.size());
      if (got < 0) fail(errno, "reading the kernel's answer");
      mnl_cb_run2(rx.data(), got, 0, portid, ignore_message, &st, ctl, NLMSG_MIN_TYPE);
    }
    if (st.error) fail(st.error, what.at(st.error_seq));
    if (st.acked < what.size()) fail(ETIMEDOUT, "the kernel did not answer every message");
  }

  // A table's sets, chains and rules; set ids are unique across the batch.
  void add_objects(batch& b, const plan::table& t, uint32_t& next_id) {
    for (const auto& c : t.counters) {
      obj_ptr o(check_alloc(nftnl_obj_alloc()));
      nftnl_obj_set_u32(o.get(), NFTNL_OBJ_FAMILY, NFPROTO_INET);
      nftnl_obj_set_str(o.get(), NFTNL_OBJ_TABLE, t.name.c_str());
      nftnl_obj_set_str(o.get(), NFTNL_OBJ_NAME, c.c_str());
      nftnl_obj_set_u32(o.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
      auto* h = b.start(NFT_MSG_NEWOBJ, NLM_F_CREATE | NLM_F_EXCL, "adding counter " + c);
      nftnl_obj_nlmsg_build_payload(h, o.get());
      b.done(h);
    }
    std::map<std::string, uint32_t> set_ids;
    for (const auto& s : t.sets) {
      set_ids[s.name] = next_id;
      add_set(b, t.name, s, next_id++);
    }
    for (const auto& c : t.chains) add_chain(b, t.name, c);
    for (const auto& c : t.chains)
      for (size_t n = 0; n < c.rules.size(); ++n) add_rule(b, t.name, c, c.rules[n], set_ids, n);
  }

  // Create-if-missing then delete makes the delete safe whether or not the table exists.
  void drop_table(batch& b, const std::string& name, const std::string& what) {
    add_table(b, name, false, NFT_MSG_NEWTABLE, NLM_F_CREATE,
              "taking " + table_desc(name) + " (another process owns it?)");
    add_table(b, name, false, NFT_MSG_DELTABLE, 0, what);
  }

  // The refusal counters of `name`, by profile.
  std::map<std::string, uint64_t> refused_in(const std::string& name) {
    std::map<std::string, uint64_t> out;
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    obj_ptr o(check_alloc(nftnl_obj_alloc()));
    nftnl_obj_set_str(o.get(), NFTNL_OBJ_TABLE, name.c_str());
    nftnl_obj_set_u32(o.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
    auto* h = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETOBJ, NFPROTO_INET, NLM_F_DUMP, seq++);
    nftnl_obj_nlmsg_build_payload(h, o.get());
    dump(h, [&](const nlmsghdr* m) {
      obj_ptr got(check_alloc(nftnl_obj_alloc()));
      if (nftnl_obj_nlmsg_parse(m, got.get()) < 0) return;
      const char* table = nftnl_obj_get_str(got.get(), NFTNL_OBJ_TABLE);
      if (!table || name != table) return;  // the dump may not filter by table
      if (auto p = plan::refused_profile(nftnl_obj_get_str(got.get(), NFTNL_OBJ_NAME)))
        out[*p] = nftnl_obj_get_u64(got.get(), NFTNL_OBJ_CTR_PKTS);
    });
    return out;
  }

  // Sends a dump request and hands each answer to `each` until the kernel says done.
  template <class F>
  void dump(nlmsghdr* req, F&& each) {
    if (mnl_socket_sendto(sock.get(), req, req->nlmsg_len) < 0) fail(errno, "sending a query");
    std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE);
    struct ctx {
      F* each;
    } c{&each};
    auto cb = [](const nlmsghdr* h, void* data) -> int {
      (*static_cast<ctx*>(data)->each)(h);
      return MNL_CB_OK;
    };
    for (;;) {
      pollfd p{mnl_socket_get_fd(sock.get()), POLLIN, 0};
      int n = ::poll(&p, 1, 2000);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(ETIMEDOUT, "the kernel did not answer a query");
      auto got = mnl_socket_recvfrom(sock.get(), rx.data(), rx.size());
      if (got < 0) fail(errno, "reading the kernel's answer");
      int rc = mnl_cb_run(rx.data(), got, req->nlmsg_seq, portid, cb, &c);
      if (rc == MNL_CB_STOP) return;
      if (rc < 0) {
        if (errno == ENOENT) return;  // no such table: nothing to list
        fail(errno, "reading the kernel's answer");
      }
    }
  }

  void add_table(batch& b, const std::string& name, bool owner, uint16_t type, uint16_t flags,
                 const std::string& what) {
    table_ptr t(check_alloc(nftnl_table_alloc()));
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name.c_str());
    if (owner) nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, NFT_TABLE_F_OWNER);
    auto* h = b.start(type, flags, what);
    nftnl_table_nlmsg_build_payload(h, t.get());
    b.done(h);
  }

  set_ptr make_set(const std::string& table, const plan::set& s, uint32_t id) {
    set_ptr p(check_alloc(nftnl_set_alloc()));
    nftnl_set_set_u32(p.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_str(p.get(), NFTNL_SET_TABLE, table.c_str());
    nftnl_set_set_str(p.get(), NFTNL_SET_NAME, s.name.c_str());
    nftnl_set_set_u32(p.get(), NFTNL_SET_ID, id);
    return p;
  }

  void add_set(batch& b, const std::string& table, const plan::set& s, uint32_t id) {
    auto p = make_set(table, s, id);
    bool v4 = s.fam == plan::family::v4;
    nftnl_set_set_u32(p.get(), NFTNL_SET_KEY_TYPE, v4 ? type_ipv4_addr : type_ipv6_addr);
    nftnl_set_set_u32(p.get(), NFTNL_SET_KEY_LEN, v4 ? 4 : 16);
    nftnl_set_set_u32(p.get(), NFTNL_SET_FLAGS,
                      (s.interval ? NFT_SET_INTERVAL : 0) | (s.timeout ? NFT_SET_TIMEOUT : 0));
    udata_ptr ud(check_alloc(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN)));
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER, byteorder_big_endian);
    if (!s.comment.empty() &&
        !nftnl_udata_put_strz(ud.get(), NFTNL_UDATA_SET_COMMENT, s.comment.c_str()))
      fail(ENAMETOOLONG, "comment of set " + s.name + " is too long");
    nftnl_set_set_data(p.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()),
                       nftnl_udata_buf_len(ud.get()));
    auto* h = b.start(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, "adding set " + s.name);
    nftnl_set_nlmsg_build_payload(h, p.get());
    b.done(h);

    // Interval sets hold each range as its start and an end marker at last+1, the way
    // nft sends them; a range reaching the family's last address needs no end marker.
    std::vector<std::pair<std::vector<uint8_t>, bool>> elems;  // key, is interval end
    for (const auto& r : s.elements) {
      elems.push_back({key_bytes(r.first), false});
      if (!s.interval) continue;
      net::u128 max = v4 ? 0xffffffffu : ~net::u128(0);
      if (net::to_u128(r.last) != max)
        elems.push_back({key_bytes(net::from_u128(net::to_u128(r.last) + 1, v4)), true});
    }
    std::vector<uint64_t> timeouts;  // ms, per element of `timed`
    for (const auto& t : s.timed) {
      elems.push_back({key_bytes(t.address), false});
      timeouts.push_back(static_cast<uint64_t>(t.ttl.count()) * 1000);
    }
    const size_t untimed = elems.size() - timeouts.size();
    for (size_t i = 0; i < elems.size(); i += max_elements_per_message) {
      auto chunk = make_set(table, s, id);
      for (size_t j = i; j < std::min(elems.size(), i + max_elements_per_message); ++j) {
        auto* e = check_alloc(nftnl_set_elem_alloc());
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, elems[j].first.data(), elems[j].first.size());
        if (elems[j].second)
          nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        if (j >= untimed) nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, timeouts[j - untimed]);
        nftnl_set_elem_add(chunk.get(), e);
      }
      auto* eh = b.start(NFT_MSG_NEWSETELEM, NLM_F_CREATE, "adding elements to set " + s.name);
      nftnl_set_elems_nlmsg_build_payload(eh, chunk.get());
      b.done(eh);
    }
  }

  void add_chain(batch& b, const std::string& table, const plan::chain& c) {
    chain_ptr p(check_alloc(nftnl_chain_alloc()));
    nftnl_chain_set_u32(p.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(p.get(), NFTNL_CHAIN_TABLE, table.c_str());
    nftnl_chain_set_str(p.get(), NFTNL_CHAIN_NAME, c.name.c_str());
    if (c.where != plan::hook::none) {
      nftnl_chain_set_str(p.get(), NFTNL_CHAIN_TYPE, c.filter ? "filter" : "nat");
      nftnl_chain_set_u32(p.get(), NFTNL_CHAIN_HOOKNUM,
                          c.where == plan::hook::output       ? NF_INET_LOCAL_OUT
                          : c.where == plan::hook::prerouting ? NF_INET_PRE_ROUTING
                          : c.where == plan::hook::forward    ? NF_INET_FORWARD
                                                              : NF_INET_LOCAL_IN);
      nftnl_chain_set_s32(p.get(), NFTNL_CHAIN_PRIO, c.priority);
      nftnl_chain_set_u32(p.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    }
    auto* h = b.start(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL, "adding chain " + c.name);
    nftnl_chain_nlmsg_build_payload(h, p.get());
    b.done(h);
  }

  void add_rule(batch& b, const std::string& table, const plan::chain& c, const plan::rule& r,
                const std::map<std::string, uint32_t>& set_ids, size_t index) {
    rule_ptr p(check_alloc(nftnl_rule_alloc()));
    nftnl_rule_set_u32(p.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_str(p.get(), NFTNL_RULE_TABLE, table.c_str());
    nftnl_rule_set_str(p.get(), NFTNL_RULE_CHAIN, c.name.c_str());
    auto* rp = p.get();
    for (const auto& m : r.matches) {
      if (auto* x = std::get_if<plan::iifname>(&m)) {
        if (x->name.empty() || x->name.size() >= IFNAMSIZ)
          fail(EINVAL, "interface name '" + x->name + "' must be 1-15 characters");
        char name[IFNAMSIZ] = {};
        x->name.copy(name, IFNAMSIZ - 1);
        add_meta(rp, NFT_META_IIFNAME);
        add_cmp(rp, name, IFNAMSIZ);
      } else if (auto* x = std::get_if<plan::mark>(&m)) {
        add_meta(rp, NFT_META_MARK);
        add_cmp(rp, &x->value, sizeof x->value);
      } else if (auto* x = std::get_if<plan::l4proto>(&m)) {
        add_meta(rp, NFT_META_L4PROTO);
        add_cmp(rp, &x->proto, sizeof x->proto);
      } else if (auto* x = std::get_if<plan::dport>(&m)) {
        uint16_t be = htons(x->port);
        add_payload(rp, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);  // tcphdr/udphdr.dest
        add_cmp(rp, &be, sizeof be);
      } else if (auto* x = std::get_if<plan::daddr>(&m)) {
        add_daddr_load(rp, x->addr.is_v4() ? plan::family::v4 : plan::family::v6);
        auto key = key_bytes(x->addr);
        add_cmp(rp, key.data(), key.size());
      } else if (auto* x = std::get_if<plan::daddr_in>(&m)) {
        add_daddr_load(rp, x->fam);
        add_lookup(rp, x->set, set_ids.at(x->set));
      } else if (auto* x = std::get_if<plan::fib_type>(&m)) {
        add_fib_type(rp, x->rtn);
      } else if (auto* x = std::get_if<plan::daddr_net>(&m)) {
        add_daddr_net(rp, x->net);
      } else if (auto* x = std::get_if<plan::icmpv6_type>(&m)) {
        add_icmpv6_type(rp, x->type);
      } else if (std::holds_alternative<plan::ct_dnat>(m)) {
        add_ct_dnat(rp);
      } else if (auto* x = std::get_if<plan::skuid>(&m)) {
        add_meta(rp, NFT_META_SKUID);  // a u32 in host byte order, as nft sends it
        add_cmp(rp, &x->uid, sizeof x->uid);
      }
    }
    if (!r.counter.empty()) {
      auto* e = expr(rp, "objref");
      nftnl_expr_set_u32(e, NFTNL_EXPR_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
      nftnl_expr_set_str(e, NFTNL_EXPR_OBJREF_IMM_NAME, r.counter.c_str());
    }
    if (std::holds_alternative<plan::ret>(r.action))
      add_verdict(rp, NFT_RETURN);
    else if (auto* j = std::get_if<plan::jump>(&r.action))
      add_verdict(rp, NFT_JUMP, j->chain.c_str());
    else if (auto* d = std::get_if<plan::redirect>(&r.action))
      add_redirect(rp, d->port);
    else if (std::holds_alternative<plan::accept>(r.action))
      add_verdict(rp, NF_ACCEPT);
    else
      add_reject(rp, std::get<plan::reject>(r.action));
    udata_ptr ud(check_alloc(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN)));
    if (!r.comment.empty()) {
      if (!nftnl_udata_put_strz(ud.get(), NFTNL_UDATA_RULE_COMMENT, r.comment.c_str()))
        fail(ENAMETOOLONG, "comment '" + r.comment + "' is too long");
      nftnl_rule_set_data(rp, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud.get()),
                          nftnl_udata_buf_len(ud.get()));
    }
    auto what = "adding rule " + std::to_string(index + 1) + " of chain " + c.name +
                (r.comment.empty() ? "" : " (" + r.comment + ")");
    auto* h = b.start(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, std::move(what));
    nftnl_rule_nlmsg_build_payload(h, rp);
    b.done(h);
  }
};

netlink::netlink() : impl_(std::make_unique<impl>()) {
  impl_->sock.reset(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC));
  if (!impl_->sock) fail(errno, "opening the netlink socket");
  if (mnl_socket_bind(impl_->sock.get(), 0, MNL_SOCKET_AUTOPID) < 0)
    fail(errno, "binding the netlink socket");
  impl_->portid = mnl_socket_get_portid(impl_->sock.get());
  int one = 1;  // error ACKs without a copy of the refused message
  setsockopt(mnl_socket_get_fd(impl_->sock.get()), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);

  // Ask for the ruleset generation: fails with EPERM now, rather than at the first
  // install, when the process lacks CAP_NET_ADMIN.
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  std::map<uint32_t, std::string> what{{impl_->seq, "querying nftables (needs CAP_NET_ADMIN)"}};
  auto* h = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, impl_->seq++);
  buf.resize(h->nlmsg_len);
  impl_->talk(buf, what);
}

netlink::~netlink() = default;  // closing the socket makes the kernel drop the owned table

void netlink::install(const ruleset& r) {
  auto t = plan::make(r);
  auto& i = *impl_;
  batch b(i.seq);
  // The new table replaces the old within the same transaction.
  i.drop_table(b, t.name, "deleting the old " + table_desc(t.name));
  i.add_table(b, t.name, true, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL,
              "creating " + table_desc(t.name));
  if (!i.table.empty() && i.table != t.name)  // renamed: the old table goes in the same batch
    i.add_table(b, i.table, false, NFT_MSG_DELTABLE, 0, "deleting " + table_desc(i.table));
  uint32_t next_id = 1;
  i.add_objects(b, t, next_id);
  // The lock goes in the same transaction: there is never a moment with one table and not
  // the other, nor one where a lock left by a crash is gone before its successor stands.
  if (r.lock != lock_mode::leave)
    i.drop_table(b, lock_table, "deleting the old " + table_desc(lock_table));
  if (r.lock == lock_mode::on) {
    i.add_table(b, lock_table, false, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL,
                "creating " + table_desc(lock_table));
    i.add_objects(b, plan::make_lock(r), next_id);
  }
  auto what = b.what();
  i.talk(b.finish(), what);
  i.table = t.name;
  if (r.lock != lock_mode::leave) i.locked = r.lock == lock_mode::on;
  i.learned_profiles.clear();
  for (const auto& p : r.profiles)
    if (p.learned) i.learned_profiles.push_back(p.name);
}

void netlink::learn(const std::string& profile, const net::address& a, std::chrono::seconds ttl,
                    std::optional<net::address> forget) {
  auto& i = *impl_;
  if (i.table.empty() || std::find(i.learned_profiles.begin(), i.learned_profiles.end(), profile) ==
                             i.learned_profiles.end())
    fail(ENOENT, "profile '" + profile + "' has no learned set installed");
  batch b(i.seq);
  std::vector<std::string> tables{i.table};
  if (i.locked) tables.emplace_back(lock_table);
  // One element message for `addr` in the profile's learned sets of its family.
  auto element = [&](uint16_t type, const net::address& addr, std::optional<uint64_t> timeout_ms,
                     std::string what) {
    const auto fam = addr.is_v4() ? plan::family::v4 : plan::family::v6;
    plan::set s{plan::learned_set(profile, fam), fam, false, true, {}, {}};
    for (const auto& table : tables) {
      auto p = i.make_set(table, s, 0);
      nftnl_set_unset(p.get(), NFTNL_SET_ID);
      const auto key = key_bytes(addr);
      auto* e = check_alloc(nftnl_set_elem_alloc());
      nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key.data(), key.size());
      if (timeout_ms) nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, *timeout_ms);
      nftnl_set_elem_add(p.get(), e);
      auto* h = b.start(type, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0,
                        what + " set " + s.name + " of " + table_desc(table));
      nftnl_set_elems_nlmsg_build_payload(h, p.get());
      b.done(h);
    }
  };
  const uint64_t ms = static_cast<uint64_t>(std::max<int64_t>(ttl.count(), 1)) * 1000;
  // Add (a no-op if present), delete, add with the new timeout: one transaction that
  // refreshes an address already learned, on kernels without element timeout updates.
  const auto adding = "adding " + a.to_string() + " to";
  element(NFT_MSG_NEWSETELEM, a, std::nullopt, adding);
  element(NFT_MSG_DELSETELEM, a, std::nullopt, adding);
  element(NFT_MSG_NEWSETELEM, a, ms, adding);
  // Add (a no-op if present), delete: gone whether or not it had expired already.
  if (forget) {
    const auto removing = "removing " + forget->to_string() + " from";
    element(NFT_MSG_NEWSETELEM, *forget, std::nullopt, removing);
    element(NFT_MSG_DELSETELEM, *forget, std::nullopt, removing);
  }
  auto what = b.what();
  i.talk(b.finish(), what);
}

void netlink::remove() {
  auto& i = *impl_;
  if (i.table.empty()) return;
  batch b(i.seq);
  i.add_table(b, i.table, false, NFT_MSG_DELTABLE, 0, "deleting " + table_desc(i.table));
  if (i.locked) i.drop_table(b, lock_table, "deleting " + table_desc(lock_table));
  auto what = b.what();
  i.talk(b.finish(), what);
  i.table.clear();
  i.locked = false;
  i.learned_profiles.clear();
}

netlink::table_info netlink::describe(const std::string& name) {
  auto& i = *impl_;
  table_info out;
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  {
    table_ptr t(check_alloc(nftnl_table_alloc()));
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name.c_str());
    auto* h = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, i.seq++);
    nftnl_table_nlmsg_build_payload(h, t.get());
    i.dump(h, [&](const nlmsghdr* m) {
      table_ptr got(check_alloc(nftnl_table_alloc()));
      if (nftnl_table_nlmsg_parse(m, got.get()) < 0) return;
      out.exists = true;
      const uint32_t flags = nftnl_table_get_u32(got.get(), NFTNL_TABLE_FLAGS);
      out.owned = flags & NFT_TABLE_F_OWNER;
      if (nftnl_table_is_set(got.get(), NFTNL_TABLE_OWNER))
        out.owner = nftnl_table_get_u32(got.get(), NFTNL_TABLE_OWNER);
    });
  }
  if (!out.exists) return out;
  std::vector<std::string> names;
  {
    set_ptr s(check_alloc(nftnl_set_alloc()));
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, name.c_str());
    auto* h = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSET, NFPROTO_INET, NLM_F_DUMP, i.seq++);
    nftnl_set_nlmsg_build_payload(h, s.get());
    i.dump(h, [&](const nlmsghdr* m) {
      set_ptr got(check_alloc(nftnl_set_alloc()));
      if (nftnl_set_nlmsg_parse(m, got.get()) < 0) return;
      names.emplace_back(nftnl_set_get_str(got.get(), NFTNL_SET_NAME));
    });
  }
  for (const auto& set : names) {
    set_ptr s(check_alloc(nftnl_set_alloc()));
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, name.c_str());
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, set.c_str());
    auto* h =
        nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, i.seq++);
    nftnl_set_elems_nlmsg_build_payload(h, s.get());
    // A learned set's addresses, with the time each has left, go along.
    const bool learned = set.starts_with("learn4_") || set.starts_with("learn6_");
    struct seen {
      std::size_t count = 0;
      std::vector<learned_address>* learned = nullptr;
    } acc;
    if (learned) acc.learned = &out.learned[set.substr(7)];
    i.dump(h, [&](const nlmsghdr* m) {
      set_ptr got(check_alloc(nftnl_set_alloc()));
      if (nftnl_set_elems_nlmsg_parse(m, got.get()) < 0) return;
      nftnl_set_elem_foreach(
          got.get(),
          [](nftnl_set_elem* e, void* data) {
            auto& a = *static_cast<seen*>(data);
            // An interval's end marker is not an element of its own.
            if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) &&
                (nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) & NFT_SET_ELEM_INTERVAL_END))
              return 0;
            ++a.count;
            uint32_t len = 0;
            const auto* key =
                static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
            if (!a.learned || !key || (len != 4 && len != 16)) return 0;
            const uint64_t left_ms = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_EXPIRATION)
                                         ? nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION)
                                         : 0;
            net::address addr;
            if (len == 4) {
              boost::asio::ip::address_v4::bytes_type b;
              std::copy(key, key + 4, b.begin());
              addr = boost::asio::ip::address_v4(b);
            } else {
              boost::asio::ip::address_v6::bytes_type b;
              std::copy(key, key + 16, b.begin());
              addr = boost::asio::ip::address_v6(b);
            }
            if (left_ms > 0)
              a.learned->push_back({addr, std::chrono::seconds((left_ms + 999) / 1000)});
            return 0;
          },
          &acc);
    });
    out.sets.push_back({set, acc.count});
  }
  out.refused = i.refused_in(name);
  return out;
}

std::map<std::string, uint64_t> netlink::refused() {
  return impl_->table.empty() ? std::map<std::string, uint64_t>{} : impl_->refused_in(impl_->table);
}

void netlink::drop(const std::string& name) {
  auto& i = *impl_;
  batch b(i.seq);
  i.drop_table(b, name, "deleting " + table_desc(name));
  auto what = b.what();
  i.talk(b.finish(), what);
}

}  // namespace tprosshy::nft
